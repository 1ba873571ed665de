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
        (the macro's DuckDB form, get_historical_features) check before skipping the tie-break,
        and `feature_store:build` = the build id (build_location.sql), which publish checks
        against the build's ledger;
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
          {%- if '@' in location %}, 'feature_store:build': '{{ location.split('@')[-1].split('.')[0] | replace("'", "''") }}'{% endif %}
          {%- if vectors %}, 'feature_store:vectors': '{{ vectors | tojson | replace("'", "''") }}'{% endif %}})
    {%- endcall %}
  {%- else -%}
    {% call statement('write_to_file') -%}
      copy {{ relation }} to '{{ location }}' ({{ options }})
    {%- endcall %}
  {%- endif -%}
{%- endmacro %}
