"""The sample data (``python -m sync sample-data``) as BigQuery tables, for the BigQuery target.

``sync/sample_data.py`` writes ``<lake>/raw/<table>.parquet`` (transactions as a folder of
parts); here each becomes the table ``<project>.<dataset>.<table>`` that
``models/staging/_sources.yml`` reads on BigQuery. Loads go through ``load_table_from_file``
with a schema derived from the Parquet's own: BigQuery accepts an explicit schema, the
emulator needs one (and refuses ``load_table_from_dataframe``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TABLES = ("customers", "merchants", "transactions", "merchant_risk_assessments", "merchant_embeddings")


def _bigquery_type(name: str, arrow: pa.DataType) -> tuple[str, str]:
    """(BigQuery type, mode) of an Arrow column; a list is a REPEATED column of its element."""
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow) or pa.types.is_fixed_size_list(arrow):
        element, mode = _bigquery_type(name, arrow.value_type)
        if mode == "REPEATED":
            raise ValueError(f"column {name}: nested lists have no BigQuery type")
        return element, "REPEATED"
    for check, bq in ((pa.types.is_boolean, "BOOL"), (pa.types.is_integer, "INT64"),
                      (pa.types.is_floating, "FLOAT64"), (pa.types.is_decimal, "NUMERIC"),
                      (pa.types.is_timestamp, "TIMESTAMP"), (pa.types.is_date, "DATE"),
                      (pa.types.is_string, "STRING"), (pa.types.is_large_string, "STRING"),
                      (pa.types.is_binary, "BYTES")):
        if check(arrow):
            # a naive timestamp is a UTC wall-clock time in this project (docs/point-in-time.md)
            return bq, "NULLABLE"
    raise ValueError(f"column {name}: no BigQuery type for {arrow}")


def bigquery_schema(schema: pa.Schema) -> list:
    from google.cloud import bigquery

    return [bigquery.SchemaField(f.name, *_bigquery_type(f.name, f.type)) for f in schema]


def sample_files(sample_dir: Path, table: str) -> list[Path]:
    """The Parquet files of one sample table: ``<table>.parquet`` or ``<table>/*.parquet``."""
    single = sample_dir / f"{table}.parquet"
    return [single] if single.is_file() else sorted((sample_dir / table).glob("*.parquet"))


def load_sample(client, project: str, dataset: str, sample_dir: str | Path) -> dict[str, int]:
    """Load ``sample_dir`` (``<lake>/raw`` of a local lake) into ``project.dataset``, replacing
    each table; returns the rows loaded per table."""
    from google.cloud import bigquery

    sample_dir = Path(sample_dir)
    counts: dict[str, int] = {}
    for table in TABLES:
        files = sample_files(sample_dir, table)
        if not files:
            raise FileNotFoundError(f"no sample data for {table} in {sample_dir}: run `python -m sync sample-data` first")
        schema = bigquery_schema(pq.read_schema(files[0]))
        counts[table] = 0
        for i, path in enumerate(files):
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET, schema=schema,
                # the first file replaces the table, so loading twice does not double it
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND if i else bigquery.WriteDisposition.WRITE_TRUNCATE)
            # Parquet lists load as REPEATED columns, not as a record of `list.element`
            config.parquet_options = bigquery.ParquetOptions()
            config.parquet_options.enable_list_inference = True
            with path.open("rb") as f:
                client.load_table_from_file(f, f"{project}.{dataset}.{table}", job_config=config).result()
            counts[table] += pq.read_metadata(path).num_rows
    return counts
