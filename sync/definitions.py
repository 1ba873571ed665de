"""Feature store definitions: what the registry publishes and the Python API returns.

Plain frozen dataclasses with a lossless dict form (the registry's JSON), so every layer
(manifest -> registry -> offline / online -> serving) speaks the same objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .contract import format_ttl, parse_data_type


@dataclass(frozen=True)
class Entity:
    name: str
    join_keys: tuple[str, ...]
    value_type: str
    description: str = ""


@dataclass(frozen=True)
class Feature:
    name: str
    data_type: str
    description: str = ""

    @property
    def type(self):
        return parse_data_type(self.data_type)


@dataclass(frozen=True)
class OfflineLocation:
    """Where a view's offline rows live: Parquet under the lake, or a warehouse table."""

    format: str  # "parquet" | "bigquery"
    path: str | None = None  # lake-relative file or folder (parquet)
    partition_by: tuple[str, ...] = ()
    relation: str | None = None  # the dbt relation (DuckDB view / BigQuery table)
    table: str | None = None  # bigquery: "project.dataset.table"
    location: str | None = None  # bigquery: the dataset's location (US, EU, ...)


@dataclass(frozen=True)
class Lineage:
    parents: tuple[str, ...] = ()  # direct upstream nodes (unique ids)
    models: tuple[str, ...] = ()  # every upstream model, by name
    sources: tuple[str, ...] = ()  # every upstream source, as source_name.table
    downstream: tuple[str, ...] = ()  # models and exposures that use the view (unique ids)


@dataclass(frozen=True)
class VectorIndex:
    """How an embedding view's vector index is built (``config.meta.feature_view.vector_index``)."""

    metric: str = "cosine"  # the distance the index answers: cosine | l2 | dot
    kind: str = "hnsw"  # hnsw | ivf
    min_rows: int | None = None  # fewer current embeddings: no index; None: $FEATURE_STORE_INDEX_MIN_ROWS
    enabled: bool = True  # false: searched exactly, no index built


@dataclass(frozen=True)
class FeatureView:
    name: str
    entities: tuple[str, ...]
    join_keys: tuple[str, ...]
    event_timestamp: str
    features: tuple[Feature, ...]
    owner: str
    created_timestamp: str | None = None
    ttl_seconds: int | None = None
    online: bool = True
    description: str = ""
    tags: tuple[str, ...] = ()
    offline: OfflineLocation = field(default_factory=lambda: OfflineLocation("parquet"))
    lineage: Lineage = field(default_factory=Lineage)
    unique_id: str = ""
    sql_fingerprint: str = ""  # of the canonical compiled SQL; "" when not compiled
    schema_fingerprint: str = ""
    code_checksum: str = ""  # dbt's checksum of the model file
    vector_index: VectorIndex | None = None  # None: the defaults, for views with a vector feature
    # the freshness SLA: the newest online value must be at most this old (``freshness``); None: no SLA
    freshness_seconds: int | None = None

    @property
    def ttl(self) -> str | None:
        return format_ttl(self.ttl_seconds)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True)
class FeatureRef:
    """``view:feature``: one feature of one view."""

    view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        view, sep, feature = text.partition(":")
        if not sep or not view or not feature or ":" in feature:
            raise ValueError(f"{text!r} is not of the form view:feature")
        return cls(view.strip(), feature.strip())


@dataclass(frozen=True)
class FeatureService:
    name: str
    features: tuple[FeatureRef, ...]
    description: str = ""
    owner: str = ""
    label: str = ""
    maturity: str = ""
    unique_id: str = ""


def to_dict(obj: Any) -> Any:
    """JSON-ready dict of a definition (tuples become lists)."""
    if isinstance(obj, FeatureRef):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _tuple(v: Any) -> tuple:
    return tuple(v or ())


def entity_from_dict(d: dict) -> Entity:
    return Entity(d["name"], _tuple(d["join_keys"]), d["value_type"], d.get("description", ""))


def feature_view_from_dict(d: dict) -> FeatureView:
    off = d.get("offline") or {"format": "parquet"}
    lin = d.get("lineage") or {}
    return FeatureView(
        name=d["name"],
        entities=_tuple(d["entities"]),
        join_keys=_tuple(d["join_keys"]),
        event_timestamp=d["event_timestamp"],
        features=tuple(Feature(**f) for f in d["features"]),
        owner=d.get("owner", ""),
        created_timestamp=d.get("created_timestamp"),
        ttl_seconds=d.get("ttl_seconds"),
        online=bool(d.get("online", True)),
        description=d.get("description", ""),
        tags=_tuple(d.get("tags")),
        offline=OfflineLocation(off["format"], off.get("path"), _tuple(off.get("partition_by")), off.get("relation"),
                                off.get("table"), off.get("location")),
        lineage=Lineage(**{k: _tuple(lin.get(k)) for k in ("parents", "models", "sources", "downstream")}),
        unique_id=d.get("unique_id", ""),
        sql_fingerprint=d.get("sql_fingerprint", ""),
        schema_fingerprint=d.get("schema_fingerprint", ""),
        code_checksum=d.get("code_checksum", ""),
        vector_index=VectorIndex(**d["vector_index"]) if d.get("vector_index") else None,
        freshness_seconds=d.get("freshness_seconds"),
    )


def feature_service_from_dict(d: dict) -> FeatureService:
    return FeatureService(
        name=d["name"],
        features=tuple(FeatureRef.parse(f) for f in d["features"]),
        description=d.get("description", ""),
        owner=d.get("owner", ""),
        label=d.get("label", ""),
        maturity=d.get("maturity", ""),
        unique_id=d.get("unique_id", ""),
    )


__all__ = [
    "Entity", "Feature", "FeatureRef", "FeatureService", "FeatureView", "Lineage", "OfflineLocation",
    "asdict", "entity_from_dict", "feature_service_from_dict", "feature_view_from_dict", "to_dict",
]
