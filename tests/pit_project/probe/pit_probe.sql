{#- Prints what the macro's rules make of inputs the tests also give to Python: the instant
    expression per column type, the collision message, and the session's time zone. -#}
{% macro instant_probe(types) %}
  {%- set out = {} -%}
  {%- for t in types -%}{%- do out.update({t: feature_store._pit_instant('"v"', t)}) -%}{%- endfor -%}
  {{ print('INSTANT_PROBE ' ~ tojson(out)) }}
{% endmacro %}

{% macro collision_probe(column, feature, full_feature_names) %}
  {{ print('COLLISION_PROBE ' ~ feature_store._pit_collision(column, feature, feature_store._pit_entity_column(), full_feature_names)) }}
{% endmacro %}

{% macro zone_probe() %}
  {{ print('ZONE_PROBE ' ~ run_query("select current_setting('TimeZone')").columns[0].values()[0]) }}
{% endmacro %}
