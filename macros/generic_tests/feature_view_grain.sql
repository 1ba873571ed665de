{#- One row per (join keys, event timestamp[, created timestamp]), none of them null.
    The columns come from the view's config.meta, so the test cannot drift from the contract.
    Failing rows: each duplicated or null-keyed grain, with how many rows share it. -#}
{% test feature_view_grain(model) %}
{%- if execute -%}
  {%- set cols = feature_store.feature_view_grain_columns(feature_store.feature_view_node(model)) -%}
{%- else -%}
  {%- set cols = [] -%}
{%- endif -%}
{%- if cols -%}
select
  {% for c in cols %}{{ adapter.quote(c) }}, {% endfor %}count(*) as n_rows
from {{ model }}
group by {% for c in cols %}{{ adapter.quote(c) }}{{ ", " if not loop.last }}{% endfor %}
having count(*) > 1
  {% for c in cols %} or {{ adapter.quote(c) }} is null{% endfor %}
{%- else -%}
select 1 as placeholder where false
{%- endif -%}
{% endtest %}
