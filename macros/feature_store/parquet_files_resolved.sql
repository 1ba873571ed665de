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
