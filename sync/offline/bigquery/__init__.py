"""BigQuery as the offline engine: connection, cost control, tables, training sets, latest rows."""
