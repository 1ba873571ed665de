{#- v_created_ttl written to the lake as a feature view is on DuckDB: resolved Parquet -#}
{{ config(materialized='external', location=env_var('PIT_DATA', '.') ~ '/built/v_created_built.parquet') }}
select * from {{ source('pit', 'created_rows') }}
