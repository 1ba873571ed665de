{#- Prints the macro's reading of each TTL (seconds, or the reason it refuses one), so tests
    can compare it with parse_ttl. -#}
{% macro ttl_probe(values) %}
  {%- set out = [] -%}
  {%- for v in values -%}
    {%- set parsed = feature_store._ttl_parse(v) -%}
    {%- do out.append({'error': parsed.error} if parsed.error else parsed.seconds) -%}
  {%- endfor -%}
  {{ print('TTL_PROBE ' ~ tojson(out)) }}
{% endmacro %}
