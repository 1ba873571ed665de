{#- A feature view's grain from its config.meta: the join keys of its entities (from the
    entity catalog), then the event timestamp, then the created timestamp when it has one. -#}
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
