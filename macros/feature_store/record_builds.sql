{#- on-run-end: a ledger for every feature view this invocation built (or tried to).

    on-run-end: ["{{ feature_store.record_builds(results) }}"]

    Written beside the build as `<identifier>@<build id>.json` once the whole invocation is
    over, so its data tests are known too: the model's status and message, the data tests
    that failed, the MD5 of the compiled SQL and the definition it was built from (the
    grain, config.meta.feature_view, the declared column types). `python -m sync publish`
    publishes a build only when its ledger says it succeeded, no test failed, and the
    definition is the one in the manifest (sync/offline/builds.py); a build without a
    ledger (still running, killed) is never published. -#}
{% macro record_builds(results) -%}
  {{ return(adapter.dispatch('record_builds', 'feature_store')(results)) }}
{%- endmacro %}

{#- Warehouse tables are not lake builds: nothing to record. -#}
{% macro default__record_builds(results) -%}
  {{ return('') }}
{%- endmacro %}

{% macro duckdb__record_builds(results) -%}
  {%- if not execute or flags.WHICH not in ['run', 'build'] -%}{{ return('') }}{%- endif -%}
  {%- set failed_tests = {} -%}
  {%- for r in results if r.node.resource_type in ['test', 'unit_test'] and r.status in ['fail', 'error'] -%}
    {%- for parent in r.node.depends_on.nodes -%}
      {%- do failed_tests.setdefault(parent, []).append(r.node.name) -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- for r in results if r.node.resource_type == 'model' -%}
    {%- set node = r.node -%}
    {%- set spec = (node.config.meta or {}).get('feature_view') -%}
    {%- if spec and node.config.materialized == 'external' and not node.config.get('location') -%}
      {%- set partitioned = (node.config.get('options') or {}).get('partition_by') is not none -%}
      {%- set location = feature_store.build_location(node.alias or node.name, partitioned, node.config.get('format') or 'parquet') -%}
      {%- set ledger = (location[:-8] if location.endswith('.parquet') else location) ~ '.json' -%}
      {%- set columns = {} -%}
      {%- for column in node.columns.values() -%}
        {%- do columns.update({column.name: column.data_type}) -%}
      {%- endfor -%}
      {%- set entry = {
          'format': 1, 'view': node.name, 'unique_id': node.unique_id,
          'build_id': location.split('@')[-1].split('.')[0], 'invocation_id': invocation_id,
          'status': r.status | string, 'message': (r.message or '') | string,
          'failed_tests': failed_tests.get(node.unique_id, []),
          'sql_md5': local_md5(node.compiled_code or ''),
          'definition': {'grain': feature_store.feature_view_grain_columns(node), 'feature_view': spec, 'columns': columns},
          'partitioned': partitioned, 'completed_at': modules.datetime.datetime.utcnow().isoformat() ~ 'Z'} -%}
      {% call statement('feature_store_ledger_' ~ loop.index) -%}
        copy (select '{{ tojson(entry) | replace("'", "''") }}'::json as build) to '{{ ledger | replace("'", "''") }}' (format json)
      {%- endcall %}
    {%- endif -%}
  {%- endfor -%}
  {{ return('') }}
{%- endmacro %}
