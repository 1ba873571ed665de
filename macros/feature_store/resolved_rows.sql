{#- The rows a feature view is written with (write_to_file.sql): with a created timestamp, only
    the latest correction(s) per grain; declared vectors cast to fixed-size arrays; ordered by
    event timestamp. -#}
{% macro resolved_rows(relation, grain, event_timestamp, created_timestamp, vectors={}) -%}
select *
{%- if vectors %} replace (
    {%- for name, type in vectors.items() %}
    cast({{ adapter.quote(name) }} as {{ 'FLOAT' if type.startswith('float32') else 'DOUBLE' }}[{{ type.split('[')[1] }}) as {{ adapter.quote(name) }}{{ ',' if not loop.last }}
    {%- endfor %})
{%- endif %}
from {{ relation }}
{%- if created_timestamp %}
qualify rank() over (
    partition by {% for c in grain %}{{ adapter.quote(c) }}{{ ', ' if not loop.last }}{% endfor %}
    order by {{ adapter.quote(created_timestamp) }} desc nulls last) = 1
{%- endif %}
order by {{ adapter.quote(event_timestamp) }}
{%- endmacro %}
