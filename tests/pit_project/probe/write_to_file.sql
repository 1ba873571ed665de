{#- A project that installs feature_store as a package enables resolved feature-view files
    with this one root macro (a package cannot override an adapter macro by itself). -#}
{% macro write_to_file(relation, location, options) -%}
  {{ feature_store.write_to_file(relation, location, options) }}
{%- endmacro %}
