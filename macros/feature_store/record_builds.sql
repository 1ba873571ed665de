{#- on-run-end: a ledger for every feature view this invocation built (or tried to).

    on-run-end: ["{{ feature_store.record_builds(results) }}"]

    Written once the whole invocation is over, so its data tests are known too: the model's
    status and message, the data tests that failed, the MD5 of the compiled SQL and the
    definition it was built from (the grain, config.meta.feature_view, the declared column
    types). On DuckDB a file beside the build, `<identifier>@<build id>.json`; on BigQuery a
    row per view in the table `<target.database>.<target.schema>.feature_store_builds`.
    `python -m sync publish` publishes a build only when its ledger says it succeeded, no
    test failed, and the definition is the one in the manifest (sync/offline/builds.py); a
    build without a ledger (still running, killed) is never published. -#}
{% macro record_builds(results) -%}
  {{ return(adapter.dispatch('record_builds', 'feature_store')(results)) }}
{%- endmacro %}

{#- Warehouse tables are not lake builds: nothing to record. -#}
{% macro default__record_builds(results) -%}
  {{ return('') }}
{%- endmacro %}

{% macro duckdb__record_builds(results) -%}
  {%- if not execute or flags.WHICH not in ['run', 'build'] -%}{{ return('') }}{%- endif -%}
  {%- for b in feature_store._feature_view_builds(results) -%}
    {%- set node = b.node -%}
    {%- if node.config.materialized == 'external' and not node.config.get('location') -%}
      {%- set partitioned = (node.config.get('options') or {}).get('partition_by') is not none -%}
      {%- set location = feature_store.build_location(node.alias or node.name, partitioned, node.config.get('format') or 'parquet') -%}
      {%- set ledger = (location[:-8] if location.endswith('.parquet') else location) ~ '.json' -%}
      {%- set entry = {
          'format': 1, 'view': node.name, 'unique_id': node.unique_id,
          'build_id': location.split('@')[-1].split('.')[0], 'invocation_id': invocation_id,
          'status': b.status, 'message': b.message, 'failed_tests': b.failed_tests,
          'sql_md5': b.sql_md5, 'definition': b.definition,
          'partitioned': partitioned, 'completed_at': modules.datetime.datetime.utcnow().isoformat() ~ 'Z'} -%}
      {% call statement('feature_store_ledger_' ~ loop.index) -%}
        copy (select '{{ tojson(entry) | replace("'", "''") }}'::json as build) to '{{ ledger | replace("'", "''") }}' (format json)
      {%- endcall %}
    {%- endif -%}
  {%- endfor -%}
  {{ return('') }}
{%- endmacro %}

{#- BigQuery: one row per feature view in `<target.database>.<target.schema>.feature_store_builds`,
    created on first use. With $FEATURE_STORE_BQ_EXPORT_URI set (gs://bucket/prefix), each view
    whose model succeeded is first exported as Parquet to `<uri>/<identifier>@<build id>/`
    (EXPORT DATA, never overwriting) and its row's export_uri names that folder. -#}
{% macro bigquery__record_builds(results) -%}
  {%- if not execute or flags.WHICH not in ['run', 'build'] -%}{{ return('') }}{%- endif -%}
  {%- set builds = feature_store._feature_view_builds(results) -%}
  {%- if not builds -%}{{ return('') }}{%- endif -%}
  {%- set export_root = env_var('FEATURE_STORE_BQ_EXPORT_URI', '').rstrip('/') -%}
  {%- set ledger = '`' ~ target.database ~ '`.`' ~ target.schema ~ '`.`feature_store_builds`' -%}
  {%- set rows = [] -%}
  {%- for b in builds -%}
    {%- set node = b.node -%}
    {%- set identifier = node.alias or node.name -%}
    {%- set export_uri = export_root ~ '/' ~ identifier ~ '@' ~ feature_store._build_id() if export_root and b.status == 'success' else none -%}
    {%- if export_uri -%}
      {% call statement('feature_store_export_' ~ loop.index) -%}
        export data options (uri = {{ feature_store._bq_string(export_uri ~ '/*.parquet') }}, format = 'PARQUET', overwrite = false)
        as select * from `{{ node.database }}`.`{{ node.schema }}`.`{{ identifier }}`
      {%- endcall %}
    {%- endif -%}
    {%- set values = [
        node.name, node.unique_id, node.database ~ '.' ~ node.schema ~ '.' ~ identifier, feature_store._build_id(),
        invocation_id, b.status, b.message] -%}
    {%- set literals = [] -%}
    {%- for value in values -%}{%- do literals.append(feature_store._bq_string(value)) -%}{%- endfor -%}
    {%- set tests = [] -%}
    {%- for name in b.failed_tests -%}{%- do tests.append(feature_store._bq_string(name)) -%}{%- endfor -%}
    {%- do literals.extend([
        'array<string>[' ~ tests | join(', ') ~ ']', feature_store._bq_string(b.sql_md5),
        feature_store._bq_string(tojson(b.definition)), feature_store._bq_string(export_uri) if export_uri else 'cast(null as string)',
        'current_timestamp()']) -%}
    {%- do rows.append('(' ~ literals | join(', ') ~ ')') -%}
  {%- endfor -%}
  {% call statement('feature_store_ledger') -%}
    create table if not exists {{ ledger }} (
        `view` STRING, unique_id STRING, relation STRING, build_id STRING, invocation_id STRING, status STRING,
        message STRING, failed_tests ARRAY<STRING>, sql_md5 STRING, definition STRING, export_uri STRING,
        completed_at TIMESTAMP
    );
    insert into {{ ledger }} (`view`, unique_id, relation, build_id, invocation_id, status, message, failed_tests,
                              sql_md5, definition, export_uri, completed_at)
    values
    {{ rows | join(',\n    ') }}
  {%- endcall %}
  {{ return('') }}
{%- endmacro %}

{#- What every ledger holds for each feature-view model of the invocation:
    [{node, status, message, failed_tests, sql_md5, definition}]. -#}
{% macro _feature_view_builds(results) -%}
  {%- set failed_tests = {} -%}
  {%- for r in results if r.node.resource_type in ['test', 'unit_test'] and r.status in ['fail', 'error'] -%}
    {%- for parent in r.node.depends_on.nodes -%}
      {%- do failed_tests.setdefault(parent, []).append(r.node.name) -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- set builds = [] -%}
  {%- for r in results if r.node.resource_type == 'model' and (r.node.config.meta or {}).get('feature_view') -%}
    {%- set node = r.node -%}
    {%- set columns = {} -%}
    {%- for column in node.columns.values() -%}
      {%- do columns.update({column.name: column.data_type}) -%}
    {%- endfor -%}
    {%- do builds.append({
        'node': node, 'status': r.status | string, 'message': (r.message or '') | string,
        'failed_tests': failed_tests.get(node.unique_id, []), 'sql_md5': local_md5(node.compiled_code or ''),
        'definition': {'grain': feature_store.feature_view_grain_columns(node),
                       'feature_view': node.config.meta.feature_view, 'columns': columns}}) -%}
  {%- endfor -%}
  {{ return(builds) }}
{%- endmacro %}

{#- A BigQuery string literal of any text: backslashes, quotes and line breaks escaped. -#}
{% macro _bq_string(value) -%}
  {{- "'" ~ (value | string).replace('\\', '\\\\').replace("'", "\\'").replace('\n', '\\n').replace('\r', '\\r') ~ "'" -}}
{%- endmacro %}
