"""Operating the feature store: status and freshness SLAs (docs/operations.md)."""
