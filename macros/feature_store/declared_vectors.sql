{#- {column: 'float32[64]'} for the model's columns declared as fixed-size float vectors -#}
{% macro declared_vectors(node) -%}
  {%- set vectors = {} -%}
  {%- for column in node.columns.values() -%}
    {%- set type = (column.data_type or '') | lower | replace(' ', '') -%}
    {%- if modules.re.match('^float(32|64)\\[[0-9]+\\]$', type) -%}
      {%- do vectors.update({column.name: type}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(vectors) }}
{%- endmacro %}
