{#- Point-in-time correct training sets in SQL (docs/point-in-time.md).

    {{ feature_store.point_in_time_join(spine=ref('stg_transactions'),
                                        features=['customer_spend:amount_sum_7d', 'merchant_risk:*'],
                                        timestamp='transaction_ts') }}

    For each spine row and feature view: the row with the greatest event timestamp <= the
    spine timestamp (and >= it minus the view's TTL), ties broken by the greatest created
    timestamp; none -> nulls. Every spine row comes back once, with all its columns.
    `feature_service='name'` instead of `features` also works; dbt cannot see a service's
    views while parsing, so add `-- depends_on: {{ ref('view') }}` lines for them.
    Results equal FeatureStore.get_historical_features (tests/test_pit_macro.py). -#}

{% macro point_in_time_join(spine, features=none, feature_service=none, timestamp='event_timestamp', full_feature_names=false) -%}
  {%- set requests = feature_store._pit_requests(features, feature_service, full_feature_names) -%}
  {%- if not execute -%}
    {{ return('select 1 as parsing') }}
  {%- endif -%}
  {{ return(adapter.dispatch('point_in_time_join', 'feature_store')(spine, requests, timestamp)) }}
{%- endmacro %}


{#- [{view, relation, join_keys, event_ts, created_ts, ttl_seconds, features: [(name, out)]}] -#}
{% macro _pit_requests(features, feature_service, full_feature_names) -%}
  {%- if (features is none) == (feature_service is none) -%}
    {{ exceptions.raise_compiler_error("point_in_time_join: pass either features=[...] or feature_service='...'") }}
  {%- endif -%}
  {%- set refs = [] -%}
  {%- if feature_service is not none -%}
    {%- if execute -%}
      {%- set found = [] -%}
      {%- for e in graph.exposures.values() if e.name == feature_service and e.type == 'ml' -%}
        {%- do found.append(e) -%}
      {%- endfor -%}
      {%- if not found -%}
        {{ exceptions.raise_compiler_error("point_in_time_join: no feature service (ml exposure) named '" ~ feature_service ~ "'") }}
      {%- endif -%}
      {%- set meta = found[0].config.meta or found[0].meta -%}
      {%- do refs.extend(meta.get('features', [])) -%}
    {%- endif -%}
  {%- else -%}
    {%- do refs.extend(features) -%}
  {%- endif -%}

  {%- set order = [] -%}
  {%- set wanted = {} -%}
  {%- for text in refs -%}
    {%- set parts = text.split(':') -%}
    {%- if parts | length != 2 or not parts[0] or not parts[1] -%}
      {{ exceptions.raise_compiler_error("point_in_time_join: '" ~ text ~ "' is not of the form view:feature") }}
    {%- endif -%}
    {%- if parts[0] not in wanted -%}
      {%- do order.append(parts[0]) -%}
      {%- do wanted.update({parts[0]: []}) -%}
    {%- endif -%}
    {%- do wanted[parts[0]].append(parts[1]) -%}
  {%- endfor -%}

  {%- set requests = [] -%}
  {%- for view in order -%}
    {%- set relation = ref(view) -%}  {#- a parse-time dependency on the view -#}
    {%- if execute -%}
      {%- set node = feature_store.feature_view_node(view) -%}
      {%- set spec = node.config.meta.feature_view -%}
      {%- set catalog = node.config.meta.feature_store.entities -%}
      {%- set keys = [] -%}
      {%- for entity in spec.entities -%}
        {%- for key in catalog[entity].join_keys if key not in keys -%}{%- do keys.append(key) -%}{%- endfor -%}
      {%- endfor -%}
      {%- set reserved = keys + [spec.event_timestamp, spec.get('created_timestamp')] -%}
      {%- set declared = [] -%}
      {%- for col in node.columns.values() if col.name not in reserved and col.data_type -%}
        {%- do declared.append(col.name) -%}
      {%- endfor -%}
      {%- set feats = [] -%}
      {%- for f in wanted[view] -%}
        {%- set names = declared if f == '*' else [f] -%}
        {%- for name in names -%}
          {%- if name not in declared -%}
            {{ exceptions.raise_compiler_error("point_in_time_join: feature view '" ~ view ~ "' has no feature '" ~ name ~ "'") }}
          {%- endif -%}
          {%- do feats.append((name, view ~ '__' ~ name if full_feature_names else name)) -%}
        {%- endfor -%}
      {%- endfor -%}
      {%- do requests.append({
          'view': view, 'relation': relation, 'config': node.config, 'join_keys': keys,
          'event_ts': spec.event_timestamp, 'created_ts': spec.get('created_timestamp'),
          'ttl_seconds': feature_store.ttl_seconds(spec.get('ttl')), 'features': feats}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(requests) }}
{%- endmacro %}


{#- The contract's TTL grammar (sync/contract.py parse_ttl; tests/test_pit_macro.py checks
    they agree): 7d, 1d12h, 90m, 45s, 2w, ISO 8601 (P7D, PT12H), whole seconds; 0/none: no TTL. -#}
{% macro ttl_seconds(value) -%}
  {%- if value is none or value is sameas false -%}{{ return(none) }}{%- endif -%}
  {%- if value is number -%}{{ return(value if value > 0 else none) }}{%- endif -%}
  {%- set text = value | string | trim -%}
  {%- if text.isdigit() -%}{{ return((text | int) or none) }}{%- endif -%}
  {%- set iso = modules.re.match('^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$', text.upper()) -%}
  {%- if iso and text.upper() not in ['P', 'PT'] and not text.upper().endswith('T') -%}
    {%- set g = iso.groups() -%}
    {%- set total = (g[0] or 0) | int * 604800 + (g[1] or 0) | int * 86400 + (g[2] or 0) | int * 3600 + (g[3] or 0) | int * 60 + (g[4] or 0) | int -%}
    {{ return(total or none) }}
  {%- endif -%}
  {%- set compact = text.lower().replace(' ', '') -%}
  {%- set parts = modules.re.findall('(\d+)(w|d|h|m|s)', compact) -%}
  {%- set units = {'w': 604800, 'd': 86400, 'h': 3600, 'm': 60, 's': 1} -%}
  {%- set ns = namespace(total=0, text='') -%}
  {%- for n, u in parts -%}
    {%- set ns.total = ns.total + (n | int) * units[u] -%}
    {%- set ns.text = ns.text ~ n ~ u -%}
  {%- endfor -%}
  {%- if parts and ns.text == compact -%}{{ return(ns.total or none) }}{%- endif -%}
  {{ exceptions.raise_compiler_error("feature_store: ttl '" ~ value ~ "' is not a duration") }}
{%- endmacro %}


{#- DuckDB: one ASOF join per view. Views written resolved (write_feature_view.sql: one
    row per join keys and event time, marked in every file's footer) join on the event time
    alone; any other view with a created timestamp joins on (event µs, created µs) packed
    into a HUGEINT, so ties resolve inside the join. -#}
{% macro duckdb__point_in_time_join(spine, requests, timestamp) -%}
{%- set tie_breaks = [] -%}
{%- for r in requests -%}
  {%- do tie_breaks.append(r.created_ts is not none and not feature_store._pit_resolved(r)) -%}
{%- endfor -%}
{%- set needs_key = true in tie_breaks -%}
with __fs_spine as (
    select *, cast({{ adapter.quote(timestamp) }} as timestamptz) as __fs_ts
    {%- if needs_key %},
        epoch_us(cast({{ adapter.quote(timestamp) }} as timestamptz))::hugeint * 18446744073709551616 + 18446744073709551615 as __fs_key
    {%- endif %}
    from {{ spine }}
)
select
    e.* exclude (__fs_ts{{ ', __fs_key' if needs_key }})
    {%- for r in requests %}{% set v = 'v' ~ loop.index0 %}
    {%- for name, out in r.features %},
    {% if r.ttl_seconds -%}
    case when {{ v }}.__fs_ts >= e.__fs_ts - to_seconds({{ r.ttl_seconds }}) then {{ v }}.{{ adapter.quote(out) }} end
    {%- else -%}
    {{ v }}.{{ adapter.quote(out) }}
    {%- endif %} as {{ adapter.quote(out) }}
    {%- endfor %}
    {%- endfor %}
from __fs_spine e
{%- for r in requests %}{% set v = 'v' ~ loop.index0 %}{% set tie_break = tie_breaks[loop.index0] %}
asof left join (
    select
        {% for k in r.join_keys %}{{ adapter.quote(k) }}, {% endfor -%}
        {{ adapter.quote(r.event_ts) }} as __fs_ts,
        {%- if tie_break %}
        epoch_us({{ adapter.quote(r.event_ts) }})::hugeint * 18446744073709551616
            + (coalesce(epoch_us({{ adapter.quote(r.created_ts) }}), -9223372036854775808)::hugeint + 9223372036854775808) as __fs_key,
        {%- endif %}
        {%- for name, out in r.features %}
        {{ adapter.quote(name) }} as {{ adapter.quote(out) }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ r.relation }}
    where {% for k in r.join_keys %}{{ adapter.quote(k) }} is not null{{ ' and ' if not loop.last }}{% endfor %}
) {{ v }}
    on {% for k in r.join_keys %}e.{{ adapter.quote(k) }} = {{ v }}.{{ adapter.quote(k) }} and {% endfor -%}
    {%- if tie_break %}e.__fs_key >= {{ v }}.__fs_key{% else %}e.__fs_ts >= {{ v }}.__fs_ts{% endif %}
{%- endfor %}
{%- endmacro %}


{#- True when the Parquet files behind an `external` view are written resolved. -#}
{% macro _pit_resolved(r) -%}
  {%- if r.config.get('materialized') != 'external' -%}{{ return(false) }}{%- endif -%}
  {%- set location = r.config.get('location') or external_location(r.relation, r.config) -%}
  {%- set files = location ~ '/**/*.parquet' if (r.config.get('options') or {}).get('partition_by') else location -%}
  {{ return(feature_store.parquet_files_resolved(files, r.join_keys + [r.event_ts])) }}
{%- endmacro %}


{#- True when every file matching `files` carries the footer key feature_store:unique_on =
    `grain`. The same query as sync/offline/historical.py RESOLVED_SQL; tests/test_pit_macro.py
    checks the two agree. -#}
{% macro parquet_files_resolved(files, grain) -%}
  {%- set files_sql = "'" ~ (files | replace("'", "''")) ~ "'" -%}
  {#- a view not built yet (e.g. `dbt compile` first): the exact form, which needs no files now -#}
  {%- if run_query("select count(*) from glob(" ~ files_sql ~ ")").columns[0].values()[0] == 0 -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set query -%}
    select count(*) > 0 and count(*) = count(*) filter (where json(m.marker) = json('{{ grain | tojson | replace("'", "''") }}'))
    from parquet_file_metadata({{ files_sql }}) f left join (
        select file_name, decode(value) as marker from parquet_kv_metadata({{ files_sql }})
        where decode(key) = 'feature_store:unique_on') m using (file_name)
  {%- endset -%}
  {{ return(run_query(query).columns[0].values()[0] is sameas true) }}
{%- endmacro %}


{#- Warehouses without ASOF joins (BigQuery): per view, the feature rows and the spine rows
    in one stream ordered by (time, feature rows first, created time); the last feature
    row at or before each spine row is LAST_VALUE(... IGNORE NULLS). One sort per view,
    no range join, so it scales like the ASOF form. -#}
{% macro default__point_in_time_join(spine, requests, timestamp) -%}
with __fs_spine as (
    select *, row_number() over () as __fs_row, {{ feature_store._pit_as_timestamp(adapter.quote(timestamp)) }} as __fs_ts
    from {{ spine }}
)
{%- for r in requests %}{% set v = '__fs_v' ~ loop.index0 %},
{{ v }}_events as (
    select
        {% for k in r.join_keys %}{{ adapter.quote(k) }}, {% endfor -%}
        {{ adapter.quote(r.event_ts) }} as __fs_ts,
        {{ adapter.quote(r.created_ts) if r.created_ts else 'cast(null as timestamp)' }} as __fs_created,
        0 as __fs_side,
        cast(null as {{ dbt.type_bigint() }}) as __fs_row,
        {{ feature_store._pit_struct(r.features) }} as __fs_vals
    from {{ r.relation }}
    where {% for k in r.join_keys %}{{ adapter.quote(k) }} is not null{{ ' and ' if not loop.last }}{% endfor %}
    union all
    select
        {% for k in r.join_keys %}{{ adapter.quote(k) }}, {% endfor -%}
        __fs_ts, cast(null as timestamp), 1, __fs_row, null
    from __fs_spine
),
{{ v }} as (
    select __fs_row, __fs_vals, __fs_match_ts
    from (
        select
            __fs_side,
            __fs_row,
            last_value(__fs_vals ignore nulls) over __fs_w as __fs_vals,
            last_value(case when __fs_side = 0 then __fs_ts end ignore nulls) over __fs_w as __fs_match_ts
        from {{ v }}_events
        window __fs_w as (
            partition by {% for k in r.join_keys %}{{ adapter.quote(k) }}{{ ', ' if not loop.last }}{% endfor %}
            order by __fs_ts asc nulls first, __fs_side asc, __fs_created asc nulls first
            rows between unbounded preceding and current row
        )
    ) as __fs_ordered
    where __fs_side = 1
)
{%- endfor %}
select
    {{ feature_store._pit_star_except('e', ['__fs_row', '__fs_ts']) }}
    {%- for r in requests %}{% set v = 'v' ~ loop.index0 %}
    {%- for name, out in r.features %},
    {% if r.ttl_seconds -%}
    case when {{ v }}.__fs_match_ts >= {{ feature_store._pit_minus_seconds('e.__fs_ts', r.ttl_seconds) }}
         then {{ v }}.__fs_vals.{{ adapter.quote(out) }} end
    {%- else -%}
    {{ v }}.__fs_vals.{{ adapter.quote(out) }}
    {%- endif %} as {{ adapter.quote(out) }}
    {%- endfor %}
    {%- endfor %}
from __fs_spine e
{%- for r in requests %}
left join __fs_v{{ loop.index0 }} v{{ loop.index0 }} on v{{ loop.index0 }}.__fs_row = e.__fs_row
{%- endfor %}
{%- endmacro %}

{% macro bigquery__point_in_time_join(spine, requests, timestamp) -%}
  {{ return(feature_store.default__point_in_time_join(spine, requests, timestamp)) }}
{%- endmacro %}


{#- small dialect differences of the window form -#}
{% macro _pit_struct(features) -%}{{ return(adapter.dispatch('_pit_struct', 'feature_store')(features)) }}{%- endmacro %}
{% macro default___pit_struct(features) -%}
struct_pack({% for name, out in features %}{{ adapter.quote(out) }} := {{ adapter.quote(name) }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{% macro bigquery___pit_struct(features) -%}
struct({% for name, out in features %}{{ adapter.quote(name) }} as {{ adapter.quote(out) }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}

{% macro _pit_star_except(alias, columns) -%}{{ return(adapter.dispatch('_pit_star_except', 'feature_store')(alias, columns)) }}{%- endmacro %}
{% macro default___pit_star_except(alias, columns) -%}{{ alias }}.* exclude ({{ columns | join(', ') }}){%- endmacro %}
{% macro bigquery___pit_star_except(alias, columns) -%}{{ alias }}.* except ({{ columns | join(', ') }}){%- endmacro %}

{% macro _pit_minus_seconds(expr, seconds) -%}{{ return(adapter.dispatch('_pit_minus_seconds', 'feature_store')(expr, seconds)) }}{%- endmacro %}
{% macro default___pit_minus_seconds(expr, seconds) -%}{{ expr }} - interval '{{ seconds | int }}' second{%- endmacro %}
{% macro bigquery___pit_minus_seconds(expr, seconds) -%}timestamp_sub({{ expr }}, interval {{ seconds | int }} second){%- endmacro %}

{% macro _pit_as_timestamp(expr) -%}{{ return(adapter.dispatch('_pit_as_timestamp', 'feature_store')(expr)) }}{%- endmacro %}
{% macro default___pit_as_timestamp(expr) -%}cast({{ expr }} as timestamp with time zone){%- endmacro %}
{% macro bigquery___pit_as_timestamp(expr) -%}cast({{ expr }} as timestamp){%- endmacro %}
