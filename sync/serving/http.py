"""The HTTP feature server: ``python -m sync serve``.

Request and response of ``POST /get-online-features`` are shaped like Feast's feature
server, so Feast HTTP clients can switch; ``POST /search`` (similarity search over an
embedding view) like its ``/retrieve-online-documents``. The registry is cached and
refreshed in the background; a failed refresh keeps serving the last good registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hmac
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import orjson
import pyarrow as pa
import pydantic
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from ..contract import DataType
from ..definitions import FeatureRef
from ..errors import FeatureStoreError, UnknownNameError
from ..feature_store import FeatureStore
from ..online.config import resolve as resolve_online
from ..operate.metrics import OperationsCollector
from ..search.errors import SearchError
from ..search.request import max_k as max_search_k
from .online_features import STATUS_NAMES, EntityRowsError, OnlineResponse
from .online_features import get_online_features as read_online_features

log = logging.getLogger("sync.serve")
STATUS_TEXT = np.array(STATUS_NAMES, dtype=object)
EPOCH = "1970-01-01T00:00:00Z"
HOT_PATH = "/get-online-features"
SEARCH_PATH = "/search"
MAX_SEARCH_ROWS = 100_000  # queries x top_k in one /search answer
MAX_BODY_BYTES = 8 * 1024 * 1024
INVALID = "invalid request: the body must be JSON matching the schema in /openapi.json"
# What a client learns of a server-side failure: its cause (store down, wrong credentials or
# TLS settings, a misconfigured URL) is for the operator and goes to the server's log only.
UNAVAILABLE = "the online store is unavailable; retry later (the server's log says why)"
INTERNAL = "internal error (the server's log says what failed)"
SEARCH_UNAVAILABLE = "the feature data cannot be read for search; retry later (the server's log says why)"
LOG_EVERY_SECONDS = 10.0  # the same failure on every request is logged once per this


@dataclass
class ServerSettings:
    project_dir: str = "."
    lake: str | None = None
    registry: str | None = None
    online: str | None = None
    token: str | None = None  # bearer token; None: no authentication
    max_entities: int = 1000  # also the most queries one /search request may hold
    refresh_seconds: float = 10.0
    search_threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))

    @classmethod
    def from_env(cls) -> ServerSettings:
        env = os.environ
        return cls(
            project_dir=env.get("FEATURE_STORE_PROJECT_DIR", "."),
            lake=env.get("FEATURE_STORE_LAKE") or None,
            registry=env.get("FEATURE_STORE_REGISTRY") or None,
            online=env.get("FEATURE_STORE_ONLINE") or None,
            token=env.get("FEATURE_STORE_TOKEN") or None,
            max_entities=int(env.get("FEATURE_STORE_MAX_ENTITIES", "1000")),
            refresh_seconds=float(env.get("FEATURE_STORE_REFRESH_SECONDS", "10")),
            search_threads=max(1, int(env.get("FEATURE_STORE_SEARCH_THREADS") or min(4, os.cpu_count() or 1))),
        )


class GetOnlineFeaturesRequest(BaseModel):
    # strict: JSON types as the schema says (no "true" for a boolean, no 1.0 or true for a key),
    # the same rules parse_request applies by hand on the hot path (tests check they agree)
    model_config = ConfigDict(strict=True)

    features: list[str] | None = Field(None, description="view:feature names; or use feature_service")
    feature_service: str | None = Field(None, description="a feature service (ml exposure) name")
    entities: dict[str, list[int | str | None]] = Field(
        ..., description="join key -> values, one per entity row", examples=[{"customer_id": [1, 2]}])
    full_feature_names: bool = False


class FeatureVector(BaseModel):
    values: list[Any]
    statuses: list[str]
    event_timestamps: list[str | None]


class GetOnlineFeaturesResponse(BaseModel):
    metadata: dict[str, list[str]]
    results: list[FeatureVector]


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None


class SearchRequest(BaseModel):
    """POST /search: close to Feast's /retrieve-online-documents (``features``, ``query``,
    ``top_k``, ``distance_metric``), with batches, entity queries, filters and as_of added."""

    # strict: JSON types as the schema says (no "3" for top_k, no true for a number), as on the hot path
    model_config = ConfigDict(strict=True)

    feature: str | None = Field(
        None, description="the vector feature to search, view:feature; default: the one vector feature named "
                          "in features (Feast's way)", examples=["merchant_embedding:embedding"])
    features: list[str] | None = Field(
        None, description="columns to return with each neighbour: view:feature, or a bare name of the "
                          "searched view (another view's feature must be keyed by the same entity)")
    query: list[float] | None = Field(None, description="one query vector")
    queries: list[list[float]] | None = Field(None, description="a batch of query vectors, one result group each")
    entities: dict[str, list[int | str | None]] | None = Field(
        None, description="join key -> values: each entity's own embedding (its latest at as_of) is its query, "
                          "and the entity is left out of its own results", examples=[{"merchant_id": [7, 8]}])
    top_k: int = Field(10, ge=1, description="neighbours per query (at most FEATURE_STORE_SEARCH_MAX_K, default 1000)")
    distance_metric: str | None = Field(
        None, description="cosine (1 - cos), l2 (Euclidean, not squared) or dot (-q.x), case-insensitive; "
                          "default: the view's index metric")
    filters: str | None = Field(
        None, description="SQL boolean expression over the view's join keys and features (bare names) and "
                          "features of views keyed by the same entity (view.feature); applied before the top k",
        examples=["category = 'grocery' and merchant_id <> 3"])
    as_of: str | list[str] | None = Field(
        None, description="ISO 8601 time (or one per query): search the embeddings as of then; default: now")
    mode: Literal["auto", "exact", "approximate"] = Field(
        "auto", description="auto: the view's index when it has a current one for the metric, else exact")


class SearchMetadata(BaseModel):
    feature_names: list[str] = Field(..., description="the columns: query, the join keys, distance, rank, then "
                                                      "the requested features; one entry of results each")
    search: dict[str, Any] = Field(..., description='how it ran: {"mode": "exact"|"approximate", "metric": ..., '
                                                    '"index": path or null, "queries": n}')


class SearchResponse(BaseModel):
    """Columnar, as Feast's /retrieve-online-documents answers: one row per (query, neighbour),
    ordered by query then rank; values at the same position of each column make a row."""

    metadata: SearchMetadata
    results: list[FeatureVector]


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("feature_server_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("feature_server_request_seconds", "get-online-features latency", registry=r,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.entities = Histogram("feature_server_entities_per_request", "Entity rows per request", registry=r,
                                  buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000))
        self.serial = Gauge("feature_server_registry_serial", "Registry serial being served", registry=r)
        self.refresh_failures = Counter("feature_server_registry_refresh_failures", "Failed registry refreshes", registry=r)
        self.search_latency = Histogram("feature_server_search_seconds", "search latency (request in to answer ready)",
                                        registry=r, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                                             10.0))
        self.search_queries = Histogram("feature_server_search_queries_per_request", "Queries per search request",
                                        registry=r, buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000))


def _error_body(message: str, detail: Any = None) -> bytes:
    return orjson.dumps({"error": message, "detail": detail})


def _features_body(result: OnlineResponse) -> bytes:
    """The JSON of a get-online-features answer, shaped like Feast's."""
    n = len(result)
    names = list(result.entities) + result.feature_names
    vectors = [{"values": values, "statuses": ["PRESENT"] * n, "event_timestamps": [EPOCH] * n}
               for values in result.entities.values()]
    statuses: dict[int, list[str]] = {}  # features of one view share a status array: format it once
    for _, values, status, times, dtype in result.items():
        text = statuses.get(id(status))
        if text is None:
            text = statuses[id(status)] = STATUS_TEXT[status].tolist()
        vectors.append({"values": _json_values(values, dtype), "statuses": text, "event_timestamps": times.iso()})
    return orjson.dumps({"metadata": {"feature_names": names}, "results": vectors}, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_values(values: list, dtype: DataType) -> list:
    """Values JSON can carry as proto3's JSON mapping does (and so Feast's feature server):
    NaN and +/-infinity as the strings "NaN", "Infinity", "-Infinity" (JSON has no such
    numbers, and null would read as a missing value), bytes as base64."""
    if dtype.element in ("float32", "float64"):
        return _floats_json(values, dtype.is_list)
    if dtype.element == "bytes":
        return [None if v is None else base64.b64encode(v).decode("ascii") for v in values]
    return values


def _special(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")


def _floats_json(values: list, is_list: bool) -> list:
    if not is_list:
        # One C loop: a NaN or an infinity makes the sum non-finite. filter(None, ...) drops
        # nulls and zeros, both finite; a sum that overflows takes the exact path below.
        if math.isfinite(sum(filter(None, values))):
            return values
        return [None if v is None else _special(v) for v in values]
    rows = [r for r in values if r is not None]  # numpy arrays
    if not rows or np.isfinite(np.concatenate(rows)).all():
        return values
    return [r if r is None or np.isfinite(r).all() else [_special(x) for x in r.tolist()] for r in values]


class InvalidRequest(Exception):
    def __init__(self, detail: list[dict]) -> None:
        super().__init__(detail)
        self.detail = detail


def _problem(field: str | None, message: str) -> dict:
    return {"loc": ["body"] if field is None else ["body", field], "msg": message}


def parse_request(body: bytes) -> dict[str, Any]:
    """The body, checked against GetOnlineFeaturesRequest's schema by hand (pydantic's cost
    per request is more than the lookup's); extra fields are ignored, as pydantic does."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest([_problem(None, f"JSON decode error: {exc}")]) from None
    if not isinstance(doc, dict):
        raise InvalidRequest([_problem(None, "Input should be a valid dictionary")])
    problems = []
    features = doc.get("features")
    if features is not None and not (isinstance(features, list) and all(type(f) is str for f in features)):
        problems.append(_problem("features", "Input should be a valid list of strings or null"))
    if not isinstance(doc.get("feature_service", ""), (str, type(None))):
        problems.append(_problem("feature_service", "Input should be a valid string or null"))
    if not isinstance(doc.get("full_feature_names", False), bool):
        problems.append(_problem("full_feature_names", "Input should be a valid boolean"))
    entities = doc.get("entities")
    if "entities" not in doc:
        problems.append(_problem("entities", "Field required"))
    elif not (isinstance(entities, dict) and all(isinstance(v, list) and all(_entity_value(x) for x in v)
                                                  for v in entities.values())):
        problems.append(_problem("entities", "Input should be an object of join key -> list of integers, strings or nulls"))
    if problems:
        raise InvalidRequest(problems)
    return doc


def _entity_value(value: object) -> bool:
    return value is None or type(value) is int or type(value) is str


def _bearer_matches(scope: Scope, token: bytes) -> bool:
    """An ``Authorization: Bearer <token>`` header with this token (as HTTPBearer reads it)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given, token)
    return False


class _Disconnected(Exception):
    """The client went away (or was dropped for sending too slowly) before its body was in."""


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY_BYTES."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _FailureLog:
    """Server-side failures go to the log, not to clients; the same one repeated on every
    request (a store that is down) is logged once per LOG_EVERY_SECONDS with a count."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def report(self, exc: BaseException, unexpected: bool = False, what: str = "online store unavailable") -> None:
        # FeatureStoreError messages name the store without its password (config.redact,
        # redis_errors); anything else is logged by type and message, as a bug to report
        text = str(exc) if isinstance(exc, FeatureStoreError) else f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._last.get(text, -math.inf) < LOG_EVERY_SECONDS:
            self._skipped[text] = self._skipped.get(text, 0) + 1
            return
        self._last[text] = now
        if len(self._last) > 100:  # bounded: keep the recent ones
            self._last = dict(list(self._last.items())[-50:])
            self._skipped = {k: v for k, v in self._skipped.items() if k in self._last}
        skipped = self._skipped.pop(text, 0)
        more = f" (and {skipped} more times since last logged)" if skipped else ""
        if unexpected:
            log.error("request failed unexpectedly: %s%s", text, more, exc_info=exc)
        else:
            log.warning("%s: %s%s", what, text, more)


class _FeaturesEndpoint:
    """POST /get-online-features without FastAPI's per-request machinery (dependency solving,
    pydantic, a thread hop for the auth check): the same checks, by hand."""

    def __init__(self, fs: FeatureStore, settings: ServerSettings, metrics: _Metrics, failures: _FailureLog) -> None:
        self.fs, self.settings, self.metrics = fs, settings, metrics
        self.failures = failures
        self.token = settings.token.encode() if settings.token is not None else None
        self.counters = {status: metrics.requests.labels(HOT_PATH, str(status))
                         for status in (200, 400, 401, 404, 413, 422, 500, 503)}

    async def __call__(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        """Status, body and extra headers; None when the client is gone (nothing to answer)."""
        started = time.perf_counter()
        if self.token is not None and not _bearer_matches(scope, self.token):
            return (*self._count(401, _error_body("missing or wrong bearer token")), [(b"www-authenticate", b"Bearer")])
        try:
            body = await _read_body(receive)
        except _Disconnected:
            return None
        if body is None:
            return (*self._count(413, _error_body(f"request body larger than {MAX_BODY_BYTES} bytes")), [])
        try:
            doc = parse_request(body)
        except InvalidRequest as exc:
            return (*self._count(422, _error_body(INVALID, exc.detail)), [])
        # inline on the event loop: a lookup is one sub-millisecond round trip, cheaper than a thread hop
        return (*self.answer(doc, started), [])

    def answer(self, doc: dict[str, Any], started: float) -> tuple[int, bytes]:
        """A valid request (the fields of GetOnlineFeaturesRequest) -> status and JSON body."""
        entities = doc["entities"]
        n = max((len(v) for v in entities.values()), default=0)
        self.metrics.entities.observe(n)
        limit = self.settings.max_entities
        if n > limit:
            return self._count(413, _error_body(f"{n} entity rows in one request; the limit is {limit}"))
        features, service = doc.get("features"), doc.get("feature_service")
        try:
            # what the request names, checked against the registry: the client's problem (4xx)
            if (features is None) == (service is None):
                raise EntityRowsError("pass either features or feature_service")
            plan = self.fs.online_plan(features, service, bool(doc.get("full_feature_names", False)))
            try:
                result = read_online_features(self.fs.online_store(), plan, entities)
            except EntityRowsError:
                raise
            except FeatureStoreError as exc:  # the store or its configuration: the server's problem
                self.failures.report(exc)
                return self._count(503, _error_body(UNAVAILABLE))
            body = _features_body(result)
        except FeatureStoreError as exc:
            return self._count(404 if isinstance(exc, UnknownNameError) else 400, _error_body(str(exc)))
        except Exception as exc:  # a bug: a JSON error body, the details in the log only
            self.failures.report(exc, unexpected=True)
            return self._count(500, _error_body(INTERNAL))
        self.metrics.latency.observe(time.perf_counter() - started)
        return self._count(200, body)

    def _count(self, status: int, body: bytes) -> tuple[int, bytes]:
        counter = self.counters.get(status) or self.metrics.requests.labels(HOT_PATH, str(status))
        counter.inc()
        return status, body


class _SearchEndpoint:
    """POST /search: the body read with the same 8 MiB limit as the hot path, then parsed,
    searched and serialized in a worker thread (CPU work: the event loop keeps serving), at most
    ``settings.search_threads`` searches at a time.

    Search raises SearchError for a request it cannot answer as asked (400) and
    UnknownNameError for unknown names (404); any other FeatureStoreError is the server's
    (the lake unreadable, bad credentials, an index missing, a bad setting): 503, the cause,
    which names the lake, in the server's log only."""

    def __init__(self, fs: FeatureStore, settings: ServerSettings, metrics: _Metrics, failures: _FailureLog) -> None:
        self.fs, self.settings, self.metrics, self.failures = fs, settings, metrics, failures
        self.limiter = anyio.CapacityLimiter(settings.search_threads)

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return self._response(413, _error_body(f"request body larger than {MAX_BODY_BYTES} bytes"))
                chunks.append(chunk)
        except ClientDisconnect:  # gone (or dropped by the request timeout): nobody to answer
            return Response(status_code=400)
        status, content = await anyio.to_thread.run_sync(self.answer, b"".join(chunks), limiter=self.limiter)
        if status == 200:
            self.metrics.search_latency.observe(time.perf_counter() - started)
        return self._response(status, content)

    def _response(self, status: int, content: bytes) -> Response:
        self.metrics.requests.labels(SEARCH_PATH, str(status)).inc()
        return Response(content, status_code=status, media_type="application/json")

    def answer(self, body: bytes) -> tuple[int, bytes]:
        """A request body -> status and JSON body (in a worker thread)."""
        try:
            request = SearchRequest.model_validate_json(body)
        except pydantic.ValidationError as exc:
            detail = [{"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
            return 422, _error_body(INVALID, detail)
        try:
            queries, n = self._queries(request)
            self.metrics.search_queries.observe(n)
            if n > self.settings.max_entities:
                return 413, _error_body(f"{n} queries in one request; the limit is {self.settings.max_entities}")
            # a top_k past the search's maximum is its 400, not this 413
            if request.top_k <= max_search_k() and n * request.top_k > MAX_SEARCH_ROWS:
                return 413, _error_body(f"{n} queries x top_k {request.top_k} could answer {n * request.top_k} rows; "
                                        f"the limit is {MAX_SEARCH_ROWS} (fewer queries or a smaller top_k)")
            feature = request.feature or self._vector_feature(request.features)
            metric = request.distance_metric.lower() if request.distance_metric is not None else None
            table = self.fs.search(feature, queries, k=request.top_k, metric=metric, filter=request.filters,
                                   as_of=request.as_of, features=request.features, mode=request.mode)
            return 200, search_body(table, n)
        except UnknownNameError as exc:
            return 404, _error_body(str(exc))
        except (SearchError, _RequestError) as exc:  # the request's problem
            return 400, _error_body(str(exc))
        except FeatureStoreError as exc:  # the server's: the lake, its credentials, an index, the settings
            self.failures.report(exc, what="search cannot read the feature data")
            return 503, _error_body(SEARCH_UNAVAILABLE)
        except Exception as exc:  # noqa: BLE001 (a bug: a JSON error body, the details in the log only)
            self.failures.report(exc, unexpected=True)
            return 500, _error_body(INTERNAL)

    @staticmethod
    def _queries(request: SearchRequest) -> tuple[Any, int]:
        """What FeatureStore.search takes as queries, and how many queries that is."""
        given = [name for name in ("query", "queries", "entities") if getattr(request, name) is not None]
        if len(given) != 1:
            raise _RequestError(f"pass exactly one of query, queries or entities (got {', '.join(given) or 'none'})")
        if request.query is not None:
            return np.asarray(request.query, dtype=np.float64), 1
        if request.queries is not None:
            if not request.queries:
                raise _RequestError("queries is empty: pass at least one query vector")
            sizes = {len(q) for q in request.queries}
            if len(sizes) > 1:
                first = len(request.queries[0])
                odd = next(i for i, q in enumerate(request.queries) if len(q) != first)
                raise _RequestError(f"queries[{odd}] has {len(request.queries[odd])} numbers but queries[0] has "
                                    f"{first}: every query vector has the feature's dimension")
            return np.asarray(request.queries, dtype=np.float64), len(request.queries)
        entities = request.entities or {}
        lengths = {len(v) for v in entities.values()}
        if not entities or lengths == {0}:
            raise _RequestError("entities has no rows: pass join key -> values, e.g. {\"merchant_id\": [7]}")
        if len(lengths) > 1:
            raise _RequestError("entities: the join keys' value lists have different lengths")
        return entities, lengths.pop()

    def _vector_feature(self, features: list[str] | None) -> str:
        """Feast names the searched vector among the features to return: the one vector feature there."""
        found = []
        for text in features or []:
            try:
                ref = FeatureRef.parse(text)
            except ValueError:
                continue  # a bare name: it cannot say which view
            view = self.fs.get_feature_view(ref.view)
            kind = view.feature(ref.feature).type if ref.feature in view.feature_names else None
            if kind is not None and kind.is_vector and kind.element in ("float32", "float64"):
                found.append(f"{ref.view}:{ref.feature}")
        if len(found) != 1:
            why = "none is" if not found else f"{len(found)} are ({', '.join(found)})"
            raise _RequestError(f"name the vector feature to search in feature (view:feature), or list exactly one "
                                f"vector feature in features: {why}")
        return found[0]


class _RequestError(FeatureStoreError):
    """A search request whose fields do not fit together (400)."""


def search_body(table: pa.Table, queries: int) -> bytes:
    """The JSON of a search answer: columnar, shaped like Feast's (metadata.feature_names and
    one {values, statuses, event_timestamps} per column); floats as in get-online-features."""
    meta = {}
    raw = (table.schema.metadata or {}).get(b"feature_store:search")
    if raw:
        meta = orjson.loads(raw)
    meta["queries"] = queries
    n = table.num_rows
    results = []
    for column in table.columns:
        values = _arrow_json(column)
        statuses = ["PRESENT" if v is not None else "NULL_VALUE" for v in values] if column.null_count else ["PRESENT"] * n
        results.append({"values": values, "statuses": statuses, "event_timestamps": [EPOCH] * n})
    return orjson.dumps({"metadata": {"feature_names": table.column_names, "search": meta}, "results": results},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def _arrow_json(column: pa.ChunkedArray) -> list:
    """A result column's values for JSON, as _json_values writes a feature's."""
    kind = column.type
    values = column.to_pylist()
    if pa.types.is_floating(kind):
        return _floats_json(values, False)
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) \
            and pa.types.is_floating(kind.value_type):
        return [v if v is None or math.isfinite(sum(filter(None, v))) else [None if x is None else _special(x) for x in v]
                for v in values]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return [None if v is None else base64.b64encode(v).decode("ascii") for v in values]
    return values


class _HotPath:
    """ASGI middleware answering one route itself, ahead of routing; the rest goes to the app."""

    def __init__(self, app: ASGIApp, path: str, endpoint: Callable[[Scope, Receive], Awaitable[tuple | None]]) -> None:
        self.app, self.path, self.endpoint = app, path, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        answer = await self.endpoint(scope, receive)
        if answer is None:
            return
        status, body, headers = answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *headers]})
        await send({"type": "http.response.body", "body": body})


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error(status: int, message: str, detail: Any = None) -> Response:
    return _json({"error": message, "detail": detail}, status)


def create_app(settings: ServerSettings | None = None, store: FeatureStore | None = None) -> FastAPI:
    settings = settings or ServerSettings.from_env()
    metrics = _Metrics()
    failures = _FailureLog()
    fs = store or FeatureStore(settings.project_dir, lake=settings.lake, registry=settings.registry,
                               online=settings.online)
    fs.refresh()  # fail at start-up, clearly, if there is no registry
    if store is None:  # and if the online store's URL cannot be right (the store may be down for now)
        resolve_online(settings.online, fs.lake.root, Path(fs.project_dir or Path.cwd()))
    metrics.serial.set(fs.serial)
    # freshness and the last verify, computed at each scrape (sync/operate/metrics.py)
    metrics.registry.register(OperationsCollector(fs))

    async def refresh_forever() -> None:
        while True:
            await asyncio.sleep(settings.refresh_seconds)
            try:
                await asyncio.to_thread(fs.refresh)  # swaps the cached document atomically
                metrics.serial.set(fs.serial)
            except Exception as exc:  # keep serving the last good registry
                metrics.refresh_failures.inc()
                log.warning("registry refresh failed, still serving serial %s: %s", fs.serial, exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # Everything imported and built so far lives as long as the server: move it out of
        # the collector's reach, or each full collection rescans it (~30 ms measured, the
        # whole p99.9 of a 500 req/s run) while requests wait.
        gc.collect()
        gc.freeze()
        task = asyncio.create_task(refresh_forever())
        try:
            yield
        finally:
            task.cancel()
            fs.close()

    app = FastAPI(title="Feature server", version="1", lifespan=lifespan,
                  description="Online features from the feature store, shaped like Feast's feature server.")
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # async: checked on the event loop, not in a worker thread
        if settings.token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise _Unauthorised()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        metrics.requests.labels(request.url.path, "422").inc()
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _error(422, INVALID, detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # unknown routes and wrong methods answer in the documented {"error", "detail"} shape
        where = f"{request.method} {request.url.path[:200]}"
        if exc.status_code == 404:
            metrics.requests.labels("unmatched", "404").inc()  # one label: paths are the client's choice
            response = _error(404, f"not found: no endpoint {where} (the API is described at /openapi.json)")
        elif exc.status_code == 405:
            metrics.requests.labels(request.url.path, "405").inc()
            allowed = (exc.headers or {}).get("Allow", "")
            response = _error(405, f"method not allowed: {where} (allowed: {allowed or 'none'})")
        else:
            response = _error(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(_Unauthorised)
    async def unauthorised(request: Request, exc: _Unauthorised) -> Response:
        metrics.requests.labels(request.url.path, "401").inc()
        response = _error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    errors = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
              413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    endpoint = _FeaturesEndpoint(fs, settings, metrics, failures)
    app.add_middleware(_HotPath, path=HOT_PATH, endpoint=endpoint)

    @app.post(HOT_PATH, response_model=GetOnlineFeaturesResponse, responses=errors, dependencies=[Depends(authorised)])
    async def get_online_features(body: GetOnlineFeaturesRequest) -> Response:
        # Documents the route (OpenAPI); requests are answered by _HotPath before they get here.
        status, content = endpoint.answer(body.model_dump(), time.perf_counter())
        return Response(content, status_code=status, media_type="application/json")

    searcher = _SearchEndpoint(fs, settings, metrics, failures)
    search_body_schema = {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SearchRequest"}}}}

    @app.post(SEARCH_PATH, response_model=SearchResponse, responses=errors, dependencies=[Depends(authorised)],
              openapi_extra={"requestBody": search_body_schema})
    async def search(request: Request) -> Response:
        """Similarity search over an embedding view: the top_k nearest entities of each query.

        The body (SearchRequest) is read and checked by hand, so its size is bounded like the
        hot path's, and the search runs in a worker thread."""
        return await searcher(request)

    default_openapi = app.openapi

    def openapi() -> dict:
        # /search reads its body by hand: its request model goes into the document here
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["SearchRequest"] = \
                SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/feature-views", dependencies=[Depends(authorised)])
    def feature_views() -> Response:
        views = fs.registry["feature_views"]
        return _json([{"name": n, "version": v["version"], "entities": v["entities"], "join_keys": v["join_keys"],
                       "ttl": v.get("ttl"), "online": v["online"], "owner": v.get("owner"), "tags": v.get("tags", []),
                       "features": v["features"], "description": v.get("description", "")} for n, v in views.items()])

    @app.get("/feature-services", dependencies=[Depends(authorised)])
    def feature_services() -> Response:
        return _json(list(fs.registry["feature_services"].values()))

    @app.get("/health")
    def health() -> Response:
        # needs no token, so it says no more than ok or not: the reason goes to the log
        try:
            fs.online_store().catalog()
            online = "ok"
        except Exception as exc:  # report, don't raise: health must answer
            failures.report(exc, unexpected=not isinstance(exc, FeatureStoreError))
            online = "unavailable"
        body = {"status": "ok" if online == "ok" else "degraded", "registry_serial": fs.serial, "online_store": online}
        return _json(body, 200 if online == "ok" else 503)

    @app.get("/metrics", dependencies=[Depends(authorised)])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/catalog", dependencies=[Depends(authorised)], include_in_schema=False)
    def catalog() -> Response:
        # the catalog page (sync/operate/catalog.py), rendered from the cached registry in a worker thread
        from ..operate.catalog import INDEX, render

        return HTMLResponse(render(fs, None)[INDEX])

    return app


class _Unauthorised(Exception):
    pass


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (and for several workers): settings from the environment."""
    return create_app(ServerSettings.from_env())
