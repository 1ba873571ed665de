{#- The first day of the UTC month of a timestamp or date: the partition key of large feature views. -#}
{% macro month_start(ts_expr) -%}
  {{ return(adapter.dispatch('month_start', 'feature_store')(ts_expr)) }}
{%- endmacro %}

{#- utc_date first: dbt.date_trunc of a timestamptz truncates in the session's zone on DuckDB -#}
{% macro default__month_start(ts_expr) -%}
  {{ dbt.cast(dbt.date_trunc('month', feature_store.utc_date(ts_expr)), 'date') }}
{%- endmacro %}
