{#- Whole days since 1970-01-01 of a date (a timestamp: of its UTC date): a numeric order key,
    so RANGE window frames work on every adapter (BigQuery's RANGE frames need a numeric key). -#}
{% macro day_number(date_expr) -%}
  {{ return(adapter.dispatch('day_number', 'feature_store')(date_expr)) }}
{%- endmacro %}

{#- utc_date first: dbt.datediff casts to timestamp, which on DuckDB reads a timestamptz in the session's zone -#}
{% macro default__day_number(date_expr) -%}
  {{ dbt.datediff("cast('1970-01-01' as date)", feature_store.utc_date(date_expr), 'day') }}
{%- endmacro %}
