"""Manifest -> definitions, checked against the metadata contract (docs/metadata-contract.md).

Every problem is collected (not just the first), each naming the model, the key, what
is wrong and how to fix it. Callers publish nothing unless the list is empty.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from .config import (
    DEFAULT_BUILDS_ROOT as BUILDS_ROOT,  # the example's; ProjectPaths.builds_root gives a project's
)
from .contract import (
    JOIN_KEY_TYPES,
    TTL_TOO_LONG,
    parse_data_type,
    parse_ttl,
    supported_types_hint,
)
from .definitions import (
    Entity,
    Feature,
    FeatureRef,
    FeatureService,
    FeatureView,
    Lineage,
    OfflineLocation,
    VectorIndex,
)
from .errors import Problem
from .manifest import Manifest, meta_of
from .sql import canonical_sql, fingerprint, output_columns

VIEW_KEYS = ("entities", "event_timestamp", "created_timestamp", "ttl", "freshness", "online", "owner", "tags",
             "vector_index")
INDEX_KEYS = ("metric", "kind", "min_rows")
ENTITY_KEYS = ("join_keys", "value_type", "description")


def catalog_hint(project: str) -> str:
    """Where the entity catalog goes, in the user's own project."""
    return f"declare entities once in dbt_project.yml under models: {project or '<your project>'}: +meta: feature_store: entities"


@dataclass
class Definitions:
    entities: dict[str, Entity] = field(default_factory=dict)
    feature_views: dict[str, FeatureView] = field(default_factory=dict)
    feature_services: dict[str, FeatureService] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def _entities(manifest: Manifest, nodes: list[dict], problems: list[Problem]) -> dict[str, Entity]:
    """The entity catalog; every view carries it (project-level meta), so merge and compare."""
    hint = catalog_hint(manifest.project_name)
    raw: dict[str, tuple[dict, str]] = {}
    for node in nodes:
        catalog = (meta_of(node).get("feature_store") or {}).get("entities")
        if catalog is None:
            continue
        if not isinstance(catalog, dict):
            problems.append(Problem(node["name"], "config.meta.feature_store.entities",
                                    "must be a mapping of entity name -> definition", hint))
            continue
        for name, spec in catalog.items():
            if name in raw and raw[name][0] != spec:
                problems.append(Problem(node["name"], f"feature_store.entities.{name}",
                                        f"conflicts with the definition seen on {raw[name][1]}",
                                        "declare each entity once, in dbt_project.yml"))
            raw.setdefault(name, (spec, node["name"]))
    entities: dict[str, Entity] = {}
    for name, (spec, where) in sorted(raw.items()):
        key = f"feature_store.entities.{name}"
        if not isinstance(spec, dict):
            problems.append(Problem(where, key, "must be a mapping with join_keys and value_type", hint))
            continue
        for extra in sorted(set(spec) - set(ENTITY_KEYS)):
            problems.append(Problem(where, f"{key}.{extra}", "is not an entity property",
                                    _did_you_mean(extra, ENTITY_KEYS) or f"use {', '.join(ENTITY_KEYS)}"))
        keys = spec.get("join_keys")
        if isinstance(keys, str):
            keys = [keys]
        if not keys or not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            problems.append(Problem(where, f"{key}.join_keys", "must be a non-empty list of column names",
                                    "e.g. join_keys: [customer_id]"))
            continue
        vtype = spec.get("value_type")
        if vtype not in JOIN_KEY_TYPES:
            problems.append(Problem(where, f"{key}.value_type", f"{vtype!r} is not a join key type",
                                    f"use one of {', '.join(JOIN_KEY_TYPES)}"))
            continue
        entities[name] = Entity(name, tuple(keys), vtype, str(spec.get("description") or ""))
    return entities


def _partition_columns(node: dict) -> tuple[str, ...]:
    raw = ((node.get("config") or {}).get("options") or {}).get("partition_by") or ""
    return tuple(c.strip() for c in str(raw).strip("()").split(",") if c.strip())


def _offline(manifest: Manifest, node: dict, problems: list[Problem], builds_root: str) -> OfflineLocation:
    config = node.get("config") or {}
    relation = node.get("relation_name")
    if manifest.adapter_type == "bigquery":
        return _bigquery_offline(node, problems)
    if manifest.adapter_type != "duckdb":
        return OfflineLocation(manifest.adapter_type, relation=relation)
    if config.get("materialized") != "external":
        problems.append(Problem(node["name"], "config.materialized",
                                f"is {config.get('materialized')!r}; feature views must be written to the lake",
                                "set materialized: external in the view's config (or +materialized: external "
                                f"for its folder under models: {manifest.project_name or '<your project>'}: in dbt_project.yml)"))
    if config.get("location"):
        problems.append(Problem(node["name"], "config.location",
                                "is set; a feature view is written to a new location on every build, which the "
                                "registry points at once the build is known to be good",
                                "remove config.location (rename the files with alias)"))
    if (config.get("format") or "parquet") != "parquet":
        problems.append(Problem(node["name"], "config.format", f"is {config['format']!r}; feature views are Parquet",
                                "remove config.format"))
    # where its builds are (<builds root>/<identifier>@<build id>); publish points at one of them
    identifier = node.get("alias") or node["name"]
    return OfflineLocation("parquet", path=f"{builds_root}/{identifier}", partition_by=_partition_columns(node),
                           relation=relation)


def _bigquery_offline(node: dict, problems: list[Problem]) -> OfflineLocation:
    """A BigQuery table, ``project.dataset.table`` from the node; its location comes from the
    table's metadata at publish (sync/offline/bigquery/tables.py)."""
    config = node.get("config") or {}
    name = node["name"]
    if config.get("materialized") not in ("table", "incremental"):
        problems.append(Problem(name, "config.materialized",
                                f"is {config.get('materialized')!r}; a feature view on BigQuery must be a table "
                                "(a view's rows change without a build, so no version could describe them)",
                                "set materialized: table in the view's config"))
    spec = meta_of(node).get("feature_view")
    spec = spec if isinstance(spec, dict) else {}
    partition = config.get("partition_by")
    event = spec.get("event_timestamp")
    if isinstance(partition, dict) and event and (partition.get("field") != event
                                                  or str(partition.get("data_type") or "date").lower() == "int64"):
        problems.append(Problem(name, "config.partition_by",
                                f"partitions the table on {partition.get('field')!r}"
                                f"{' by integer range' if str(partition.get('data_type')).lower() == 'int64' else ''}; "
                                f"a partition filter on the event timestamp {event!r} cannot be applied to it",
                                f"partition_by={{'field': '{event}', 'data_type': 'timestamp', 'granularity': 'day'}}, "
                                "or no partition_by"))
    identifier = node.get("alias") or name
    return OfflineLocation("bigquery", relation=node.get("relation_name"),
                           table=f"{node.get('database')}.{node.get('schema')}.{identifier}")


def _lineage(manifest: Manifest, node: dict) -> Lineage:
    ups = manifest.upstream(node["unique_id"])
    models, sources = [], []
    for uid in ups:
        up = manifest.node(uid) or {}
        if uid.startswith("model."):
            models.append(up.get("name", uid))
        elif uid.startswith("source."):
            sources.append(f"{up.get('source_name')}.{up.get('name')}")
    return Lineage(
        parents=tuple(sorted((node.get("depends_on") or {}).get("nodes", []))),
        models=tuple(sorted(models)),
        sources=tuple(sorted(sources)),
        downstream=tuple(manifest.downstream(node["unique_id"])),
    )


def _fingerprints(manifest: Manifest, node: dict, view: FeatureView) -> tuple[str, str]:
    relations = {}
    for uid in (node.get("depends_on") or {}).get("nodes", []):
        up = manifest.node(uid) or {}
        if up.get("relation_name"):
            relations[up["relation_name"]] = up.get("name", uid)
    if not node.get("compiled_code"):
        # `dbt build -s other_model` leaves this node uncompiled: the registry keeps the
        # published fingerprint if the file is unchanged (see registry.document)
        sql = ""
    else:
        sql = canonical_sql(node["compiled_code"], relations, manifest.adapter_type)
    schema = json.dumps({
        "join_keys": view.join_keys, "entities": view.entities,
        "event_timestamp": view.event_timestamp, "created_timestamp": view.created_timestamp,
        "features": [(f.name, f.data_type) for f in view.features],
    }, sort_keys=True)
    return (fingerprint(sql) if sql else ""), fingerprint(schema)


def _vector_index(spec: Any, features: list[Feature], bad) -> VectorIndex | None:
    """``vector_index``: false (no index), or how to build it (docs/search.md)."""
    from .search.index import KINDS
    from .search.metrics import METRICS

    if spec is None:
        return None
    if not any(f.type.is_vector for f in features):
        bad("feature_view.vector_index", "the view has no vector feature to index",
            "declare a vector column (e.g. data_type: float32[64]) or remove vector_index")
        return None
    if spec is False:
        return VectorIndex(enabled=False)
    if not isinstance(spec, dict):
        bad("feature_view.vector_index", f"{spec!r} is not a mapping or false",
            "e.g. vector_index: {metric: cosine, kind: hnsw}, or vector_index: false")
        return None
    for key in spec:
        if key not in INDEX_KEYS:
            bad(f"feature_view.vector_index.{key}", "is not a vector_index setting",
                _did_you_mean(str(key), INDEX_KEYS) or f"allowed: {', '.join(INDEX_KEYS)}")
    metric, kind, min_rows = spec.get("metric", "cosine"), spec.get("kind", "hnsw"), spec.get("min_rows")
    if metric not in METRICS:
        bad("feature_view.vector_index.metric", f"{metric!r} is not a metric", f"use one of {', '.join(METRICS)}")
    if kind not in KINDS:
        bad("feature_view.vector_index.kind", f"{kind!r} is not an index kind", f"use one of {', '.join(KINDS)}")
    if min_rows is not None and (isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0):
        bad("feature_view.vector_index.min_rows", f"{min_rows!r} is not a number of rows", "e.g. min_rows: 10000")
        min_rows = None
    return VectorIndex(metric=str(metric), kind=str(kind), min_rows=min_rows)


def _feature_view(manifest: Manifest, node: dict, entities: dict[str, Entity],
                  problems: list[Problem], warnings: list[Problem], builds_root: str = BUILDS_ROOT) -> FeatureView | None:
    name = node["name"]
    start = len(problems)

    def bad(key: str, message: str, hint: str = "") -> None:
        problems.append(Problem(name, key, message, hint))

    spec = meta_of(node).get("feature_view")
    if not isinstance(spec, dict):
        bad("config.meta.feature_view", "is empty" if spec is None else "must be a mapping",
            "give it entities, event_timestamp and owner in the model's YAML (docs/metadata-contract.md), "
            "or remove feature_view from its meta if the model is not a feature view")
        return None
    for extra in sorted(set(spec) - set(VIEW_KEYS)):
        bad(f"feature_view.{extra}", "is not a feature view property",
            _did_you_mean(extra, VIEW_KEYS) or f"allowed: {', '.join(VIEW_KEYS)}")

    columns: dict[str, dict] = node.get("columns") or {}
    declared = set(columns)
    where_cols = f"the columns declared in {node.get('patch_path', 'schema.yml').split('://')[-1]}"

    # entities -> join keys
    names = spec.get("entities")
    if isinstance(names, str):
        names = [names]
    join_keys: list[str] = []
    if not names or not isinstance(names, list):
        bad("feature_view.entities", "must list at least one entity", "e.g. entities: [customer]")
        names = []
    for ent in names:
        if ent not in entities:
            bad("feature_view.entities", f"unknown entity {ent!r}",
                _did_you_mean(str(ent), entities)
                or f"known entities: {', '.join(entities) or 'none'}; {catalog_hint(manifest.project_name)}")
            continue
        for key in entities[ent].join_keys:
            if key not in declared:
                bad(f"columns.{key}", f"join key {key!r} of entity {ent!r} is not one of {where_cols}",
                    f"select and declare a column named {key}")
            else:
                dt = columns[key].get("data_type")
                if dt and str(dt).lower() != entities[ent].value_type:
                    bad(f"columns.{key}.data_type", f"is {dt!r} but entity {ent!r} has value_type "
                        f"{entities[ent].value_type!r}", "make them agree, or drop the column's data_type")
            if key not in join_keys:
                join_keys.append(key)

    # timestamps
    timestamps: list[str] = []
    for prop, required in (("event_timestamp", True), ("created_timestamp", False)):
        col = spec.get(prop)
        if col is None:
            if required:
                bad(f"feature_view.{prop}", "is missing", "name the column that says when each row's values became true")
            continue
        if not isinstance(col, str) or col not in declared:
            bad(f"feature_view.{prop}", f"column {col!r} is not one of {where_cols}",
                _did_you_mean(str(col), declared) or f"declare the column {col!r} in schema.yml")
            continue
        dt = columns[col].get("data_type")
        if dt and str(dt).lower() not in ("timestamp", "date"):
            bad(f"columns.{col}.data_type", f"{prop} column must be a timestamp, got {dt!r}", "use data_type: timestamp")
        timestamps.append(col)

    keys_resolved = len(problems) == start
    try:
        ttl = parse_ttl(spec.get("ttl"))
    except ValueError as exc:
        bad("feature_view.ttl", str(exc), "use e.g. 30d, 12h, 1d12h, P7D or a number of seconds; omit for no TTL")
        ttl = None
    try:  # the freshness SLA: a duration in the TTL's formats (docs/metadata-contract.md)
        freshness = parse_ttl(spec.get("freshness"))
    except ValueError as exc:
        message = str(exc).replace(TTL_TOO_LONG, "is longer than 100 years (36525d), the longest freshness SLA")
        bad("feature_view.freshness", message,
            "use e.g. 26h, 1d, 90m, PT26H or a number of seconds: the oldest the newest online value may be; "
            "omit for no freshness SLA")
        freshness = None
    online = spec.get("online", True)
    if not isinstance(online, bool):
        bad("feature_view.online", f"{online!r} is not true/false", "use online: true or online: false")
    owner = spec.get("owner")
    if not isinstance(owner, str) or not owner.strip():
        bad("feature_view.owner", "is missing", "name the owning team or person, e.g. owner: fraud-ml@example.com")
        owner = ""
    tags = spec.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        bad("feature_view.tags", "must be a list of strings", "e.g. tags: [payments, fraud]")
        tags = []

    # features: every other declared column. While keys or timestamps are unresolved, an
    # untyped column is probably one of them, so only a present-but-bad type is reported.
    partitions = _partition_columns(node)
    reserved = set(join_keys) | set(timestamps) | set(partitions)
    features: list[Feature] = []
    for col, props in columns.items():
        if col in reserved or (not keys_resolved and props.get("data_type") is None):
            continue
        if ":" in col:  # services, the API and the macro name features as view:feature
            bad(f"columns.{col}", f"feature name {col!r} contains ':', so it cannot be referenced as view:feature",
                f"rename the column, e.g. `as {col.replace(':', '_')}` in the model's SQL and in schema.yml")
            continue
        try:
            dtype = parse_data_type(props.get("data_type"))
        except ValueError as exc:
            bad(f"columns.{col}.data_type", f"feature {col!r}: data_type {exc}", supported_types_hint())
            continue
        features.append(Feature(col, str(dtype), props.get("description") or ""))
    if not features and len(problems) == start:
        bad("columns", "declares no features", "declare each feature column with a data_type")

    # the SQL must produce every declared column
    produced = output_columns(node.get("compiled_code") or "", manifest.adapter_type)
    if produced is not None:
        for col in columns:
            if col not in produced:
                bad(f"columns.{col}", "is declared in schema.yml but the model's SQL does not select it",
                    "select the column in the model or remove it from schema.yml")
        for col in produced:
            if col not in columns:
                warnings.append(Problem(name, f"columns.{col}", "is selected but not declared, so it is not a feature",
                                        "declare it with a data_type to publish it"))

    vector_index = _vector_index(spec.get("vector_index"), features, bad)
    offline = _offline(manifest, node, problems, builds_root)
    if len(problems) > start:
        return None
    view = FeatureView(
        name=name, entities=tuple(names), join_keys=tuple(join_keys),
        event_timestamp=spec["event_timestamp"], created_timestamp=spec.get("created_timestamp"),
        features=tuple(features), owner=owner.strip(), ttl_seconds=ttl, freshness_seconds=freshness,
        online=online,
        description=node.get("description") or "", tags=tuple(tags), offline=offline,
        lineage=_lineage(manifest, node), unique_id=node["unique_id"], vector_index=vector_index,
    )
    sql_fp, schema_fp = _fingerprints(manifest, node, view)
    return FeatureView(**{**view.__dict__, "sql_fingerprint": sql_fp, "schema_fingerprint": schema_fp,
                          "code_checksum": (node.get("checksum") or {}).get("checksum", "")})


def _feature_service(exposure: dict, views: dict[str, FeatureView], view_names: set[str],
                     problems: list[Problem]) -> FeatureService | None:
    name = exposure["name"]
    start = len(problems)
    listed = meta_of(exposure).get("features")
    if not listed or not isinstance(listed, list):
        problems.append(Problem(name, "config.meta.features", "must list the service's features",
                                "e.g. features: [customer_spend:amount_sum_7d, merchant_risk:*]"))
        return None
    depends = {uid.rsplit(".", 1)[-1] for uid in (exposure.get("depends_on") or {}).get("nodes", [])}
    refs: list[FeatureRef] = []
    for item in listed:
        try:
            ref = FeatureRef.parse(str(item))
        except ValueError as exc:
            problems.append(Problem(name, "config.meta.features", str(exc), "write view:feature or view:*"))
            continue
        if ref.view not in view_names:
            problems.append(Problem(name, "config.meta.features", f"{item!r}: unknown feature view {ref.view!r}",
                                    _did_you_mean(ref.view, view_names) or f"known views: {', '.join(sorted(view_names))}"))
            continue
        if ref.view not in depends:
            problems.append(Problem(name, "depends_on", f"uses {ref.view!r} but does not depend on it",
                                    f"add ref('{ref.view}') to the exposure's depends_on"))
        view = views.get(ref.view)
        if view is None:  # the view itself is invalid and already reported
            continue
        wanted = view.feature_names if ref.feature == "*" else (ref.feature,)
        for feat in wanted:
            if feat not in view.feature_names:
                problems.append(Problem(name, "config.meta.features", f"{item!r}: view {ref.view!r} has no feature {feat!r}",
                                        _did_you_mean(feat, view.feature_names) or f"features: {', '.join(view.feature_names)}"))
            elif FeatureRef(ref.view, feat) not in refs:
                refs.append(FeatureRef(ref.view, feat))
    if len(problems) > start:
        return None
    owner = exposure.get("owner") or {}
    return FeatureService(
        name=name, features=tuple(refs), description=exposure.get("description") or "",
        owner=owner.get("email") or owner.get("name") or "", label=exposure.get("label") or "",
        maturity=exposure.get("maturity") or "", unique_id=exposure["unique_id"],
    )


def build_definitions(manifest: Manifest, builds_root: str = BUILDS_ROOT) -> tuple[Definitions, list[Problem]]:
    """All definitions in the manifest, and every problem found in them.

    ``builds_root``: the lake-relative folder dbt writes feature-view builds to
    (``ProjectPaths.builds_root``, from the profile's external_root).
    """
    problems: list[Problem] = []
    defs = Definitions()
    nodes = sorted(manifest.feature_view_nodes(), key=lambda n: (n["name"], n["unique_id"]))
    for model, key in manifest.misspelt_feature_view_keys():
        problems.append(Problem(model, f"config.meta.{key}", "is not a key sync reads, so the model is not a feature view",
                                "did you mean 'feature_view'? (docs/metadata-contract.md)"))
    defs.entities = _entities(manifest, nodes, problems)
    if not defs.entities and nodes:
        problems.append(Problem(manifest.project_name, "feature_store.entities", "no entities are declared",
                                catalog_hint(manifest.project_name)))

    seen_names: dict[str, str] = {}
    seen_locations: dict[str, str] = {}
    for node in nodes:
        name = node["name"]
        if name in seen_names:
            problems.append(Problem(name, "name", f"duplicate feature view name ({seen_names[name]} and {node['unique_id']})",
                                    "give every feature view a unique model name (versioned models are not supported)"))
            continue
        seen_names[name] = node["unique_id"]
        view = _feature_view(manifest, node, defs.entities, problems, defs.warnings, builds_root)
        if view is None:
            continue
        where = view.offline.path or view.offline.table or view.offline.relation or ""
        if where in seen_locations:
            problems.append(Problem(name, "alias", f"writes to the same place as {seen_locations[where]} ({where})",
                                    "give each feature view its own alias/location"))
            continue
        seen_locations[where] = name
        defs.feature_views[name] = view

    view_names = set(seen_names)
    for exposure in sorted(manifest.ml_exposures(), key=lambda e: e["name"]):
        if exposure["name"] in defs.feature_services:
            problems.append(Problem(exposure["name"], "name", "duplicate feature service name", "rename one exposure"))
            continue
        service = _feature_service(exposure, defs.feature_views, view_names, problems)
        if service is not None:
            defs.feature_services[service.name] = service
    return defs, problems
