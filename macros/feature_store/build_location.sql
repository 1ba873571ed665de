{#- Where one build of a feature view is written: its own location, never reused
    (docs/registry.md, "Builds"). `<external_root>/<identifier>@<build id>` is a folder of
    hive partitions for partitioned views and `<...>.parquet` otherwise; the build's
    ledger (record_builds.sql) sits beside it as `<...>.json`. The build id starts with
    the invocation's start time, so builds sort by age. -#}
{% macro build_location(identifier, partitioned, format='parquet') -%}
  {%- set base = adapter.external_root() ~ '/' ~ identifier ~ '@' ~ feature_store._build_id() -%}
  {{- base if partitioned else base ~ '.' ~ format -}}
{%- endmacro %}

{#- This invocation's build id: its start time (UTC), then the start of its id. -#}
{% macro _build_id() -%}
  {{- run_started_at.strftime('%Y%m%dT%H%M%SZ') ~ '-' ~ invocation_id[:8] -}}
{%- endmacro %}
