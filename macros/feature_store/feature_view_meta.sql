{#- Read a feature view's contract from the graph, so dbt tests and macros derive their
    columns from the same config.meta that `python -m sync` publishes. -#}

{% macro feature_view_node(relation_or_name) -%}
  {%- set name = relation_or_name if relation_or_name is string else relation_or_name.identifier -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type == 'model' and (node.name == name or node.alias == name) -%}
      {{ return(node) }}
    {%- endif -%}
  {%- endfor -%}
  {{ exceptions.raise_compiler_error("feature_store: no model named '" ~ name ~ "'") }}
{%- endmacro %}

{% macro feature_view_grain_columns(node) -%}
  {%- set spec = node.config.meta.get('feature_view') -%}
  {%- if not spec -%}
    {{ exceptions.raise_compiler_error(node.name ~ ": config.meta.feature_view is missing") }}
  {%- endif -%}
  {%- set catalog = node.config.meta.get('feature_store', {}).get('entities', {}) -%}
  {%- set cols = [] -%}
  {%- for entity in spec.get('entities', []) -%}
    {%- if entity not in catalog -%}
      {{ exceptions.raise_compiler_error(node.name ~ ": unknown entity '" ~ entity ~ "'") }}
    {%- endif -%}
    {%- for key in catalog[entity]['join_keys'] -%}
      {%- if key not in cols -%}{%- do cols.append(key) -%}{%- endif -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- do cols.append(spec['event_timestamp']) -%}
  {%- if spec.get('created_timestamp') -%}{%- do cols.append(spec['created_timestamp']) -%}{%- endif -%}
  {{ return(cols) }}
{%- endmacro %}
