{#- The Parquet files (a path or a glob) that a DuckDB view created by dbt-duckdb's
    `external` materialization reads: the build it was last pointed at, which need not be
    where this invocation would write (build_location.sql). None when the relation is not
    such a view. -#}
{% macro relation_files(relation) -%}
  {%- set query -%}
    select sql from duckdb_views()
    where view_name = '{{ relation.identifier | replace("'", "''") }}'
      and schema_name = '{{ relation.schema | replace("'", "''") }}'
      {%- if relation.database %} and database_name = '{{ relation.database | replace("'", "''") }}'{% endif %}
  {%- endset -%}
  {%- set rows = run_query(query).rows -%}
  {%- if not rows -%}{{ return(none) }}{%- endif -%}
  {%- set found = modules.re.search("read_parquet\\('((?:[^']|'')*)'", rows[0][0]) -%}
  {{ return(found.group(1).replace("''", "'") if found else none) }}
{%- endmacro %}
