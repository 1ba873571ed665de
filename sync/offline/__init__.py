"""Offline store: feature view rows as Parquet in the lake."""
