{#- Prints the macro's reading of each TTL, so tests can compare it with parse_ttl. -#}
{% macro ttl_probe(values) %}
  {%- set out = [] -%}
  {%- for v in values -%}{%- do out.append(feature_store.ttl_seconds(v)) -%}{%- endfor -%}
  {{ print('TTL_PROBE ' ~ tojson(out)) }}
{% endmacro %}
