{% macro resolved_probe(files, grain) %}
  {{ print("RESOLVED_PROBE " ~ feature_store.parquet_files_resolved(files, grain)) }}
{% endmacro %}
