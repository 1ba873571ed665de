{#- The UTC instant at which a day's aggregate is complete: midnight after the day.
    Daily features become known then, never earlier, so they cannot leak the future. -#}
{% macro day_end(date_expr) -%}
  {{ return(adapter.dispatch('day_end', 'feature_store')(date_expr)) }}
{%- endmacro %}

{% macro default__day_end(date_expr) -%}
  cast({{ dbt.dateadd('day', 1, date_expr) }} as timestamp with time zone)
{%- endmacro %}

{#- timezone('UTC', ...) reads the naive midnight as UTC; a cast to timestamptz would use the session's zone -#}
{% macro duckdb__day_end(date_expr) -%}
  timezone('UTC', {{ dbt.dateadd('day', 1, feature_store.utc_date(date_expr)) }})
{%- endmacro %}

{#- dbt.dateadd returns a DATETIME on BigQuery: timestamp(..., 'UTC') makes it the UTC instant -#}
{% macro bigquery__day_end(date_expr) -%}
  timestamp({{ dbt.dateadd('day', 1, feature_store.utc_date(date_expr)) }}, 'UTC')
{%- endmacro %}
