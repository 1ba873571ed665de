{#- The UTC calendar date of a timestamp (naive: its own clock, read as UTC) or of a date, whatever
    the session's time zone. The other date helpers (day_number, day_end, month_start) start
    from it, so a project whose profile does not pin UTC, on a machine in New York, still cuts
    days at UTC midnight. -#}
{% macro utc_date(ts_expr) -%}
  {{ return(adapter.dispatch('utc_date', 'feature_store')(ts_expr)) }}
{%- endmacro %}

{#- BigQuery's cast of a TIMESTAMP to DATE is in UTC already -#}
{% macro default__utc_date(ts_expr) -%}
  {{ dbt.cast(ts_expr, 'date') }}
{%- endmacro %}

{#- not dbt.cast: on DuckDB `cast(timestamptz as date)` uses the session's zone; epoch_us uses none -#}
{% macro duckdb__utc_date(ts_expr) -%}
  cast(make_timestamp(epoch_us({{ ts_expr }})) as date)
{%- endmacro %}
