{#- Point-in-time correct training sets in SQL (docs/point-in-time.md).

    {{ feature_store.point_in_time_join(spine=ref('stg_transactions'),
                                        features=['customer_spend:amount_sum_7d', 'merchant_risk:*'],
                                        timestamp='transaction_ts') }}

    For each spine row and feature view: the row with the greatest event timestamp <= the
    spine timestamp (and >= it minus the view's TTL), ties broken by the greatest created
    timestamp; none -> nulls. Every spine row comes back once, with all its columns.
    `feature_service='name'` instead of `features` also works; dbt cannot see a service's
    views while parsing, so add `-- depends_on: {{ ref('view') }}` lines for them.
    Results equal FeatureStore.get_historical_features (tests/test_pit_macro.py).

    Rules written both here and in Python (tests/test_pit_macro.py checks each pair agrees;
    docs/point-in-time.md lists them): the TTL grammar and bound (ttl_seconds ~
    sync/contract.py parse_ttl), times as UTC instants floored to µs (_pit_instant ~
    sync/offline/instants.py instant_sql), the output-name collision message (_pit_collision
    ~ sync/offline/historical.py COLLISION), the resolved-files check (parquet_files_resolved
    ~ historical.py RESOLVED_SQL). Each public macro named here has a file of its own.

    Dispatched per adapter: duckdb__ (ASOF joins) and default__ (a window, e.g. BigQuery). -#}

{% macro point_in_time_join(spine, features=none, feature_service=none, timestamp='event_timestamp', full_feature_names=false) -%}
  {%- set requests = feature_store._pit_requests(features, feature_service, full_feature_names) -%}
  {%- if not execute -%}
    {{ return('select 1 as parsing') }}
  {%- endif -%}
  {%- set spine_columns = feature_store._pit_spine_columns(spine) -%}
  {%- do feature_store._pit_check_outputs(spine_columns, requests, full_feature_names) -%}
  {{ return(adapter.dispatch('point_in_time_join', 'feature_store')(spine, requests, timestamp, spine_columns)) }}
{%- endmacro %}


{#- The spine's columns as {name: type}, or none when they cannot be known now: compiling
    without introspection (`--no-introspect`, e.g. offline), or a spine not built yet (a
    `dbt compile` before the first build; `dbt run` compiles again once it exists). -#}
{% macro _pit_spine_columns(spine) -%}
  {%- if not flags.INTROSPECT -%}{{ return(none) }}{%- endif -%}
  {%- if spine is string -%}
    {{ return(adapter.dispatch('_pit_query_columns', 'feature_store')(spine)) }}
  {%- endif -%}
  {{ return(feature_store._pit_relation_columns(spine) or none) }}
{%- endmacro %}

{#- {name: data type} of a relation; {} when it does not exist (yet) or introspection is off. -#}
{% macro _pit_relation_columns(relation) -%}
  {%- set out = {} -%}
  {%- if flags.INTROSPECT -%}
    {%- for col in adapter.get_columns_in_relation(relation) -%}{%- do out.update({col.name: col.dtype}) -%}{%- endfor -%}
  {%- endif -%}
  {{ return(out) }}
{%- endmacro %}

{% macro default___pit_query_columns(query) -%}
  {%- set out = {} -%}
  {%- for name in run_query('select * from ' ~ query ~ ' limit 0').column_names -%}{%- do out.update({name: none}) -%}{%- endfor -%}
  {{ return(out) }}
{%- endmacro %}

{% macro duckdb___pit_query_columns(query) -%}
  {%- set out = {} -%}
  {%- for row in run_query('describe select * from ' ~ query).rows -%}{%- do out.update({row[0]: row[1]}) -%}{%- endfor -%}
  {{ return(out) }}
{%- endmacro %}


{#- Refuse what the warehouse would otherwise rename silently (DuckDB answers a second
    `spend_1h` as `spend_1h_1`): an output column equal to a spine column (compared without
    case, as SQL does) or to another view's output, and spine columns in our namespace. -#}
{% macro _pit_check_outputs(spine_columns, requests, full_feature_names) -%}
  {%- set seen = {} -%}
  {%- set reserved = [] -%}
  {%- for name in (spine_columns or {}).keys() -%}
    {%- do seen.update({name | lower: feature_store._pit_entity_column()}) -%}
    {%- if name.startswith('__fs_') -%}{%- do reserved.append(name) -%}{%- endif -%}
  {%- endfor -%}
  {%- if reserved -%}
    {{ exceptions.raise_compiler_error("point_in_time_join: spine columns may not start with '__fs_': " ~ reserved | join(', ')) }}
  {%- endif -%}
  {%- for r in requests -%}
    {%- for name, out in r.features -%}
      {%- set feature = r.view ~ ':' ~ name -%}
      {%- if out | lower in seen -%}
        {{ exceptions.raise_compiler_error("point_in_time_join: " ~ feature_store._pit_collision(out, feature, seen[out | lower], full_feature_names)) }}
      {%- endif -%}
      {%- do seen.update({out | lower: feature}) -%}
    {%- endfor -%}
  {%- endfor -%}
{%- endmacro %}

{#- The message, word for word as sync/offline/historical.py COLLISION / collision_message. -#}
{% macro _pit_collision(column, feature, other, full_feature_names) -%}
  {%- set hint = '' if full_feature_names else '; pass full_feature_names=True to name columns view__feature' -%}
  {{ return("output column '{column}' (from {feature}) collides with {other}{hint}".format(
      column=column, feature=feature, other=other, hint=hint)) }}
{%- endmacro %}

{% macro _pit_entity_column() -%}{{ return("a column of the entity rows (entity_df, or the macro's spine)") }}{%- endmacro %}


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
          'ttl_seconds': feature_store.ttl_seconds(spec.get('ttl'), view), 'features': feats}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(requests) }}
{%- endmacro %}

{#- DuckDB: one ASOF join per view. Views written resolved (write_to_file.sql: one
    row per join keys and event time, marked in every file's footer) join on the event time
    alone; any other view with a created timestamp joins on (event µs, created µs) packed
    into a HUGEINT, so ties resolve inside the join. Every time goes through _pit_instant,
    so the answer is the same in any session time zone. -#}
{% macro duckdb__point_in_time_join(spine, requests, timestamp, spine_columns=none) -%}
{%- set spine_ts = feature_store._pit_instant(adapter.quote(timestamp), feature_store._pit_timestamp_type(spine_columns, timestamp)) -%}
{%- set tie_breaks = [] -%}
{%- set instants = [] -%}
{%- for r in requests -%}
  {%- do tie_breaks.append(r.created_ts is not none and not feature_store._pit_resolved(r)) -%}
  {%- set types = {} -%}
  {%- for name, dtype in feature_store._pit_relation_columns(r.relation).items() -%}{%- do types.update({name | lower: dtype}) -%}{%- endfor -%}
  {%- do instants.append({
      'event': feature_store._pit_instant(adapter.quote(r.event_ts), types.get(r.event_ts | lower)),
      'created': feature_store._pit_instant(adapter.quote(r.created_ts), types.get(r.created_ts | lower)) if r.created_ts else none}) -%}
{%- endfor -%}
{%- set needs_key = true in tie_breaks -%}
with __fs_spine as (
    select *, {{ spine_ts }} as __fs_ts
    {%- if needs_key %},
        epoch_us({{ spine_ts }})::hugeint * 18446744073709551616 + 18446744073709551615 as __fs_key
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
{%- for r in requests %}{% set v = 'v' ~ loop.index0 %}{% set tie_break = tie_breaks[loop.index0] %}{% set t = instants[loop.index0] %}
asof left join (
    select
        {% for k in r.join_keys %}{{ adapter.quote(k) }}, {% endfor -%}
        {{ t.event }} as __fs_ts,
        {%- if tie_break %}
        epoch_us({{ t.event }})::hugeint * 18446744073709551616
            + (coalesce(epoch_us({{ t.created }}), -9223372036854775808)::hugeint + 9223372036854775808) as __fs_key,
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


{#- A UTC instant (TIMESTAMPTZ) floored to the microsecond, in any session time zone:
    naive values are UTC wall-clock times, zoned ones the instants they denote, and ns are
    floored (DuckDB's casts would round them, and `cast(naive as timestamptz)` would read
    them in the session's zone). Python's rule: sync/offline/instants.py instant_sql;
    tests/test_pit_macro.py checks both on every type. Unknown type (not built yet): the
    form for every type but TIMESTAMPTZ_NS, which then fails to bind rather than answer wrong. -#}
{% macro _pit_instant(expr, data_type=none) -%}
  {%- if (data_type or '') | upper in ['TIMESTAMPTZ_NS', 'TIMESTAMP_NS WITH TIME ZONE'] -%}
    {{ return("make_timestamptz(epoch_us(timezone('UTC', " ~ expr ~ ")))") }}
  {%- endif -%}
  {{ return("make_timestamptz(epoch_us(" ~ expr ~ "))") }}
{%- endmacro %}

{#- The spine's timestamp column type (none: unknown); a clear error when it is missing or not a time. -#}
{% macro _pit_timestamp_type(spine_columns, timestamp) -%}
  {%- if spine_columns is none -%}{{ return(none) }}{%- endif -%}
  {%- for name, dtype in spine_columns.items() if name | lower == timestamp | lower -%}
    {%- set t = (dtype or '') | upper -%}
    {%- if dtype and not (t.startswith('TIMESTAMP') or t in ['DATE', 'DATETIME']) -%}
      {{ exceptions.raise_compiler_error("point_in_time_join: spine column '" ~ name ~ "' is " ~ dtype ~ ", not a timestamp; convert it first (e.g. cast(" ~ name ~ " as timestamptz))") }}
    {%- endif -%}
    {{ return(dtype) }}
  {%- endfor -%}
  {{ exceptions.raise_compiler_error("point_in_time_join: the spine has no timestamp column '" ~ timestamp ~ "' (columns: " ~ spine_columns.keys() | join(', ') ~ "); name it with timestamp='...'") }}
{%- endmacro %}


{#- True when the Parquet files behind an `external` view are written resolved. -#}
{% macro _pit_resolved(r) -%}
  {%- if r.config.get('materialized') != 'external' -%}{{ return(false) }}{%- endif -%}
  {%- set files = feature_store.relation_files(r.relation) -%}
  {%- if files is none -%}{{ return(false) }}{%- endif -%}
  {{ return(feature_store.parquet_files_resolved(files, r.join_keys + [r.event_ts])) }}
{%- endmacro %}

{#- Warehouses without ASOF joins (BigQuery): per view, the feature rows and the spine's
    distinct (join keys, instant) points in one stream ordered by (time, feature rows first,
    created time); the last feature row at or before each point is LAST_VALUE(... IGNORE
    NULLS). One sort per view, no range join, so it scales like the ASOF form. The spine
    gets its features back by an equi-join on (join keys, instant): no row id is invented,
    since BigQuery may evaluate a CTE once per reference and number rows differently each time. -#}
{% macro default__point_in_time_join(spine, requests, timestamp, spine_columns=none) -%}
with __fs_spine as (
    select *, {{ feature_store._pit_as_timestamp(adapter.quote(timestamp)) }} as __fs_ts
    from {{ spine }}
)
{%- for r in requests %}{% set v = '__fs_v' ~ loop.index0 %}{% set keys = [] %}
{%- for k in r.join_keys %}{% do keys.append(adapter.quote(k)) %}{% endfor %},
{{ v }}_points as (
    select distinct {{ keys | join(', ') }}, __fs_ts
    from __fs_spine
    where {{ keys | join(' is not null and ') }} is not null
),
{{ v }}_events as (
    select
        {{ keys | join(', ') }},
        {{ feature_store._pit_as_timestamp(adapter.quote(r.event_ts)) }} as __fs_ts,
        {{ feature_store._pit_as_timestamp(adapter.quote(r.created_ts) if r.created_ts else 'null') }} as __fs_created,
        0 as __fs_side,
        {{ feature_store._pit_struct(r.features) }} as __fs_vals
    from {{ r.relation }}
    where {{ keys | join(' is not null and ') }} is not null
    union all
    select {{ keys | join(', ') }}, __fs_ts, {{ feature_store._pit_as_timestamp('null') }}, 1, null
    from {{ v }}_points
),
{{ v }} as (
    select
        {{ keys | join(', ') }}, __fs_ts,
        {% if r.ttl_seconds -%}
        case when __fs_match_ts >= {{ feature_store._pit_minus_seconds('__fs_ts', r.ttl_seconds) }} then __fs_vals end
        {%- else -%}
        __fs_vals
        {%- endif %} as __fs_vals
    from (
        select
            {{ keys | join(', ') }}, __fs_ts, __fs_side,
            last_value(__fs_vals ignore nulls) over __fs_w as __fs_vals,
            last_value(case when __fs_side = 0 then __fs_ts end ignore nulls) over __fs_w as __fs_match_ts
        from {{ v }}_events
        window __fs_w as (
            partition by {{ keys | join(', ') }}
            order by __fs_ts asc nulls first, __fs_side asc, __fs_created asc nulls first
            rows between unbounded preceding and current row
        )
    ) as __fs_ordered
    where __fs_side = 1
)
{%- endfor %}
select
    {{ feature_store._pit_star_except('e', ['__fs_ts']) }}
    {%- for r in requests %}{% set v = 'v' ~ loop.index0 %}
    {%- for name, out in r.features %},
    {{ v }}.__fs_vals.{{ adapter.quote(out) }} as {{ adapter.quote(out) }}
    {%- endfor %}
    {%- endfor %}
from __fs_spine e
{%- for r in requests %}{% set v = 'v' ~ loop.index0 %}
left join __fs_v{{ loop.index0 }} {{ v }}
    on {% for k in r.join_keys %}{{ v }}.{{ adapter.quote(k) }} = e.{{ adapter.quote(k) }} and {% endfor %}{{ v }}.__fs_ts = e.__fs_ts
{%- endfor %}
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
{% macro default___pit_minus_seconds(expr, seconds) -%}{{ dbt.dateadd('second', -(seconds | int), expr) }}{%- endmacro %}
{#- not dbt.dateadd: on BigQuery it returns a DATETIME, which cannot be compared with the TIMESTAMP it bounds -#}
{% macro bigquery___pit_minus_seconds(expr, seconds) -%}timestamp_sub({{ expr }}, interval {{ seconds | int }} second){%- endmacro %}

{#- An instant; not dbt.type_timestamp(), a naive type on most warehouses, which drops a zoned value's zone.
    BigQuery: TIMESTAMP stays, DATETIME and DATE are read as UTC (CAST's default zone in dbt's jobs). -#}
{% macro _pit_as_timestamp(expr) -%}{{ return(adapter.dispatch('_pit_as_timestamp', 'feature_store')(expr)) }}{%- endmacro %}
{% macro default___pit_as_timestamp(expr) -%}cast({{ expr }} as timestamp with time zone){%- endmacro %}
{% macro bigquery___pit_as_timestamp(expr) -%}cast({{ expr }} as timestamp){%- endmacro %}
