{#- Cross-database date helpers, dispatched per adapter like dbt-utils. -#}

{#- Whole days since 1970-01-01: a numeric order key, so RANGE window frames work on
    every adapter (BigQuery's RANGE frames need a numeric key). -#}
{% macro day_number(date_expr) -%}
  {{ return(adapter.dispatch('day_number', 'feature_store')(date_expr)) }}
{%- endmacro %}

{% macro default__day_number(date_expr) -%}
  date_diff('day', date '1970-01-01', {{ date_expr }})
{%- endmacro %}

{% macro duckdb__day_number(date_expr) -%}
  date_diff('day', date '1970-01-01', cast({{ date_expr }} as date))
{%- endmacro %}

{% macro bigquery__day_number(date_expr) -%}
  unix_date({{ date_expr }})
{%- endmacro %}

{#- The UTC instant at which a day's aggregate is complete: midnight after the day.
    Daily features become known then, never earlier, so they cannot leak the future. -#}
{% macro day_end(date_expr) -%}
  {{ return(adapter.dispatch('day_end', 'feature_store')(date_expr)) }}
{%- endmacro %}

{% macro default__day_end(date_expr) -%}
  cast({{ date_expr }} + interval 1 day as timestamp with time zone)
{%- endmacro %}

{% macro duckdb__day_end(date_expr) -%}
  cast(cast({{ date_expr }} as date) + interval 1 day as timestamptz)
{%- endmacro %}

{% macro bigquery__day_end(date_expr) -%}
  timestamp(date_add({{ date_expr }}, interval 1 day), 'UTC')
{%- endmacro %}

{#- First day of the month of a timestamp: the partition key of large feature views. -#}
{% macro month_start(ts_expr) -%}
  {{ return(adapter.dispatch('month_start', 'feature_store')(ts_expr)) }}
{%- endmacro %}

{% macro default__month_start(ts_expr) -%}
  cast(date_trunc('month', cast({{ ts_expr }} as date)) as date)
{%- endmacro %}

{% macro bigquery__month_start(ts_expr) -%}
  date_trunc(date({{ ts_expr }}, 'UTC'), month)
{%- endmacro %}
