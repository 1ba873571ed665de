"""Operational gauges for ``/metrics``: each view's freshness and lag, and the last verify's mismatches.

Computed when Prometheus scrapes (a custom collector), from the registry the server holds,
the online store's identity and ``<lake>/verify/last.json``, with the same rules as
``python -m sync status`` and ``verify``. A source that cannot be read leaves its gauges out
of that scrape rather than failing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from ..errors import FeatureStoreError
from .status import view_status
from .verify import LAST_FILE


class OperationsCollector:
    """A prometheus_client collector over a FeatureStore (``registry.register(OperationsCollector(fs))``)."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._freshness()
        yield from self._verify()

    def _freshness(self) -> Iterator[GaugeMetricFamily]:
        try:
            doc = self.fs.registry
            uid = self.fs.online_store().instance_id()
        except (FeatureStoreError, OSError):
            return
        now_us = int(time.time() * 1_000_000)
        age = GaugeMetricFamily("feature_store_view_freshness_age_seconds",
                                "Now minus the newest event time online (offline for offline views)", labels=["view"])
        lag = GaugeMetricFamily("feature_store_view_online_lag_seconds",
                                "Newest event time in the lake minus the newest online", labels=["view"])
        stale = GaugeMetricFamily("feature_store_view_stale",
                                  "1 when the view misses its freshness SLA, 0 when it meets it", labels=["view"])
        for name, raw in sorted((doc.get("feature_views") or {}).items()):
            status = view_status(name, raw, uid, None, now_us)
            if status.age_seconds is not None:
                age.add_metric([name], status.age_seconds)
            if status.lag_seconds is not None:
                lag.add_metric([name], status.lag_seconds)
            if status.freshness_seconds:
                stale.add_metric([name], 1.0 if status.status == "stale" else 0.0)
        yield from (age, lag, stale)

    def _verify(self) -> Iterator[GaugeMetricFamily]:
        try:
            last = json.loads(self.fs.lake.read_bytes(LAST_FILE))
        except (FeatureStoreError, OSError, ValueError):
            return
        total = GaugeMetricFamily("feature_store_verify_mismatches",
                                  "Mismatches found by the last `python -m sync verify`, per view", labels=["view"])
        for name, view in sorted((last.get("views") or {}).items()):
            total.add_metric([name], float(view.get("mismatches", 0)))
        yield total
        yield GaugeMetricFamily("feature_store_verify_last_run_mismatches",
                                "Mismatches found by the last verify, all views", value=float(last.get("mismatches", 0)))
