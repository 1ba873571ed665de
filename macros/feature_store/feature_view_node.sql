{#- A model's graph node, found by name or alias (or by a relation's identifier), so dbt tests
    and macros read a feature view's contract from the same config.meta that `python -m sync`
    publishes. -#}
{% macro feature_view_node(relation_or_name) -%}
  {%- set name = relation_or_name if relation_or_name is string else relation_or_name.identifier -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and (node.name == name or node.alias == name) -%}
      {{ return(node) }}
    {%- endif -%}
  {%- endfor -%}
  {{ exceptions.raise_compiler_error("feature_store: no model named '" ~ name ~ "'") }}
{%- endmacro %}
