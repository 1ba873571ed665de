{#- dbt-duckdb's `external` materialization asks this macro where to write a model; a root
    project's macro of this name takes precedence over the adapter's (a project that
    installs this package forwards to it, see docs/adopting.md). Feature views get a
    location of their own per build (build_location.sql), so a rebuild never touches the
    files a published version reads; any other model is placed as dbt-duckdb would. -#}
{% macro external_location(relation, config) -%}
  {%- set partitioned = (config.get('options') or {}).get('partition_by') is not none -%}
  {%- set format = config.get('format') or 'parquet' -%}
  {%- if (config.get('meta') or {}).get('feature_view') -%}
    {{- feature_store.build_location(relation.identifier, partitioned, format) -}}
  {%- elif partitioned -%}
    {{- adapter.external_root() }}/{{ relation.identifier -}}
  {%- else -%}
    {{- adapter.external_root() }}/{{ relation.identifier }}.{{ format -}}
  {%- endif -%}
{%- endmacro %}
