{#- Feature views are written to the lake resolved (docs/point-in-time.md, "Resolved at build").

    dbt-duckdb's `external` materialization ends with `write_to_file`; a root project's macro
    of that name takes precedence over the adapter's. For a feature view it writes:
      - one row per (join keys, event timestamp): among late corrections only the greatest
        created timestamp survives (a missing one counts as the oldest), the only row a
        point-in-time join or the online store can ever pick. Rows tied on the created
        timestamp too are kept, so the view's grain test still fails on them: no form of
        the join can order those, and dbt build reports them instead of picking one;
      - rows ordered by event timestamp, so row-group statistics prune time ranges;
      - the footer key `feature_store:unique_on` = the grain it is unique on, which readers
        (the macro's DuckDB form, get_historical_features) check before skipping the tie-break;
      - declared vectors (data_type float32[n] / float64[n]) cast to FLOAT[n] / DOUBLE[n], so a
        wrong length fails the build, and named in the footer key `feature_store:vectors`;
        the `feature_store` dbt-duckdb plugin then stores them as Arrow fixed-size lists
        (sync/offline/vectors.py).
    Any other model is written exactly as dbt-duckdb would. -#}

{% macro write_to_file(relation, location, options) -%}
  {%- set spec = (model.config.meta or {}).get('feature_view') if model is defined and model.config is defined else none -%}
  {%- if spec and 'parquet' in (options | lower) -%}
    {%- set grain = feature_store.feature_view_grain_columns(model)[:-1] if spec.get('created_timestamp')
                    else feature_store.feature_view_grain_columns(model) -%}
    {%- set vectors = feature_store.declared_vectors(model) -%}
    {% call statement('write_to_file') -%}
      copy ({{ feature_store.resolved_rows(relation, grain, spec.event_timestamp, spec.get('created_timestamp'), vectors) }})
      to '{{ location }}' ({{ options }}, kv_metadata {
          'feature_store:unique_on': '{{ grain | tojson | replace("'", "''") }}'
          {%- if vectors %}, 'feature_store:vectors': '{{ vectors | tojson | replace("'", "''") }}'{% endif %}})
    {%- endcall %}
  {%- else -%}
    {% call statement('write_to_file') -%}
      copy {{ relation }} to '{{ location }}' ({{ options }})
    {%- endcall %}
  {%- endif -%}
{%- endmacro %}


{#- The effective rows per grain: with a created timestamp, the latest correction(s). -#}
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


{#- {column: 'float32[64]'} for the model's columns declared as fixed-size float vectors -#}
{% macro declared_vectors(node) -%}
  {%- set vectors = {} -%}
  {%- for column in node.columns.values() -%}
    {%- set type = (column.data_type or '') | lower | replace(' ', '') -%}
    {%- if modules.re.match('^float(32|64)\\[[0-9]+\\]$', type) -%}
      {%- do vectors.update({column.name: type}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(vectors) }}
{%- endmacro %}
