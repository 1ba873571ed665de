"""Object storage for the lake: per-scheme settings, compare-and-swap, errors, DuckDB.

``sync.lake.Lake`` is the entry point; these modules are its parts, one job each:
``options`` (settings from the standard credential chains), ``errors`` (one clear message
naming the URI), ``cas`` with ``local``/``s3``/``gcs`` (compare-and-swap per scheme),
``duckdb`` and ``dbt_plugin`` (DuckDB through fsspec), ``metering`` (bytes and requests).
"""
