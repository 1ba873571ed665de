"""Serving benchmark: in-process and HTTP get_online_features vs the raw Redis floor and Feast.

    .venv/bin/python bench/datagen.py serve --out bench/data/serve --entities 1000000 --views 5 --features-per-view 10
    .venv/bin/python bench/bench_serving.py --data bench/data/serve

One Redis (started here on a free loopback port), the same data (1M entities, 5 views,
50 features): this project materializes it, then prints p50/p99/p99.9 and throughput for
1 entity x 50 features and 100 entities x 50 features, in-process (also with .to_dict(),
as Feast is timed) and over HTTP at fixed request rates (bench/loadgen.py, open loop), next
to a raw redis-py pipeline of the same HMGETs (the floor; the "bare floor" also formats its
keys in plain Python instead of through the key codec's Arrow path). Feast's figures come
from bench/feast/feast_online.py and feast_serve.py (own venv, default settings) on the same
data and Redis.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from sync.definitions import Entity, Feature, FeatureView, OfflineLocation  # noqa: E402
from sync.lake import Lake  # noqa: E402
from sync.registry import RegistryStore, apply_definitions  # noqa: E402
from sync.validate import Definitions  # noqa: E402

FEAST_PY = HERE / ".venv-feast" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench_redis_")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def publish(data: Path) -> list[str]:
    """A registry over the dataset's views (as sync would publish it); returns feature refs."""
    views, refs = {}, []
    for d in sorted(data.glob("view_*"), key=lambda p: int(p.name.split("_")[1])):
        names = [n for n in pq.read_schema(next(d.glob("*.parquet"))).names
                 if n not in ("entity_id", "event_timestamp", "created_timestamp")]
        views[d.name] = FeatureView(d.name, ("entity",), ("entity_id",), "event_timestamp",
                                    tuple(Feature(n, "float64") for n in names), "bench",
                                    created_timestamp="created_timestamp", offline=OfflineLocation("parquet", d.name),
                                    sql_fingerprint="bench", schema_fingerprint=f"bench-{len(names)}")
        refs += [f"{d.name}:{n}" for n in names]
    defs = Definitions(entities={"entity": Entity("entity", ("entity_id",), "int64")}, feature_views=views)
    context = {"published_at": "2026-11-24T00:00:00+00:00", "dbt": {}, "project": "bench_serve"}
    RegistryStore(Lake(str(data))).update(lambda current: apply_definitions(current, defs, context))
    return refs


def timed(fn, n: int) -> dict:
    """Latency percentiles of n calls, and the garbage-collection pauses among them."""
    pauses: list[float] = []
    started: list[float] = []

    def on_gc(phase, info):
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(on_gc)
    lat = np.empty(n)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            lat[i] = time.perf_counter() - t
        total = time.perf_counter() - t0
    finally:
        gc.callbacks.remove(on_gc)
    ms = lat * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "p99.9": float(np.percentile(ms, 99.9)), "per_s": n / total,
            "gc_pauses": len(pauses), "gc_max_ms": max(pauses, default=0) * 1000}


def _feast_result(proc: subprocess.CompletedProcess) -> dict:
    """The JSON line a Feast script prints last, or its error."""
    if proc.returncode != 0:
        return {"error": proc.stderr[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "serve")
    parser.add_argument("--calls", type=int, default=20000, help="in-process calls per 1-entity case")
    parser.add_argument("--rates", type=float, nargs="*", default=[500, 2000], help="HTTP request rates (1 entity)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per HTTP run")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-feast", action="store_true")
    args = parser.parse_args()
    data = args.data.resolve()
    n_entities = sum(pq.read_metadata(p).num_rows for p in (data / "view_0").glob("*.parquet"))

    from sync import FeatureStore
    from sync.materialize import run as materialize

    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}/0"
    rows: list[tuple] = []
    try:
        refs = publish(data)
        t = time.perf_counter()
        outcome = materialize(Lake(str(data)), RegistryStore(Lake(str(data))), url, full_refresh=True)
        print(f"materialized {n_entities:,} entities x {len(refs)} features in 5 views: "
              f"{outcome.summary() if hasattr(outcome, 'summary') else ''} ({time.perf_counter() - t:.1f}s)", flush=True)

        fs = FeatureStore(registry=str(data), online=url)
        rng = np.random.default_rng(1)
        ids = rng.integers(0, n_entities, 200_000)
        one = [[{"entity_id": int(i)}] for i in ids[: args.calls]]
        hundred = [{"entity_id": ids[i * 100:(i + 1) * 100].tolist()} for i in range(args.calls // 10)]
        for _ in range(500):  # warm up: connections, plan cache, code paths
            fs.get_online_features(one[_], refs)
        got = fs.get_online_features(hundred[0], refs).to_dict(include_status=True)
        present = np.mean([s == "PRESENT" for k, v in got.items() if k.endswith("__status") for s in v])
        print(f"check: {present:.1%} of values present for 100 random entities", flush=True)

        sdk_1 = timed(lambda i: fs.get_online_features(one[i], refs), len(one))
        sdk_100 = timed(lambda i: fs.get_online_features(hundred[i], refs), len(hundred))
        # the same with every value made a Python object, as Feast's figures below are (to_dict)
        dict_1 = timed(lambda i: fs.get_online_features(one[i], refs).to_dict(include_status=True), len(one))
        dict_100 = timed(lambda i: fs.get_online_features(hundred[i], refs).to_dict(include_status=True), len(hundred))

        # the floor: the same HMGETs through a raw redis-py pipeline, no decoding
        import redis as redis_py

        store = fs.online_store()
        plan = fs.online_plan(refs, None, False)
        view = plan.views[0][0]
        codec = store.key_codec(view)
        fields = [v.field for v, _ in plan.views]
        client = redis_py.Redis(port=redis.port)

        def raw(batch):
            keys = codec.encode(codec.arrays([(i,) for i in batch], view.name)).to_pylist()
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.execute_command("HMGET", k, *fields)
            return pipe.execute()

        def bare(batch):  # keys formatted in Python: the pipeline round trip and nothing else
            pipe = client.pipeline(transaction=False)
            for i in batch:
                pipe.execute_command("HMGET", b"%s:%d" % (codec.namespace.encode(), i), *fields)
            return pipe.execute()

        raw_1 = timed(lambda i: raw([one[i][0]["entity_id"]]), len(one))
        raw_100 = timed(lambda i: raw(hundred[i]["entity_id"]), len(hundred))
        bare_1 = timed(lambda i: bare([one[i][0]["entity_id"]]), len(one))
        bare_100 = timed(lambda i: bare(hundred[i]["entity_id"]), len(hundred))
        for shape, sdk, as_dict, floor, bare_floor in (("1 x 50", sdk_1, dict_1, raw_1, bare_1),
                                                       ("100 x 50", sdk_100, dict_100, raw_100, bare_100)):
            rows.append(("in-process get_online_features", shape, sdk))
            rows.append(("  ... and .to_dict(include_status=True)", shape, as_dict))
            rows.append(("raw redis-py pipeline (floor)", shape, floor))
            rows.append(("  ... keys pre-formatted (bare floor)", shape, bare_floor))

        if not args.skip_http:
            port = free_port()
            env = {**os.environ, "FEATURE_STORE_REGISTRY": str(data), "FEATURE_STORE_ONLINE": url}
            server = subprocess.Popen([sys.executable, "-m", "sync", "serve", "--registry", str(data), "--online", url,
                                       "--port", str(port), "--workers", "1"], env=env, cwd=HERE.parent,
                                      stderr=subprocess.PIPE)
            try:
                import httpx

                endpoint = f"http://127.0.0.1:{port}/get-online-features"
                for _ in range(300):
                    try:
                        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                import loadgen

                body1 = [orjson.dumps({"features": refs, "entities": {"entity_id": [e[0]["entity_id"]]}})
                         for e in one[:2000]]
                body100 = [orjson.dumps({"features": refs, "entities": h}) for h in hundred[:500]]
                loadgen.run(endpoint, body1, 200, 2)  # warm up
                for rate in args.rates:
                    r = loadgen.run(endpoint, body1, rate, args.duration)
                    rows.append((f"HTTP, 1 worker, {rate:.0f} req/s", "1 x 50", r))
                best = loadgen.find_max(endpoint, body100, 50, min(args.duration, 5.0))
                rows.append(("HTTP, 1 worker, max sustained", "100 x 50", best))
            finally:
                server.terminate()
                server.wait(10)

        if not args.skip_feast and FEAST_PY.exists():
            for n in (1, 100):
                proc = subprocess.run([str(FEAST_PY), str(HERE / "feast" / "feast_online.py"), "--data", str(data),
                                       "--redis", f"127.0.0.1:{redis.port}", "--entities-per-request", str(n),
                                       "--requests", "3000" if n == 1 else "500"], capture_output=True, text=True)
                rows.append(("Feast 0.67 get_online_features", f"{n} x 50", _feast_result(proc)))
            rate = args.rates[0] if args.rates else 500
            proc = subprocess.run([str(FEAST_PY), str(HERE / "feast" / "feast_serve.py"), "--data", str(data),
                                   "--redis", f"127.0.0.1:{redis.port}", "--entities-per-request", "1",
                                   "--rate", str(rate), "--duration", str(args.duration), "--skip-materialize"],
                                  capture_output=True, text=True)
            rows.append((f"Feast 0.67 HTTP, 1 worker, {rate:.0f} req/s", "1 x 50", _feast_result(proc)))
    finally:
        redis.stop()

    print(f"\n{'what':40} {'shape':9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'per s':>9}  note")
    floor = {r[1]: r[2] for r in rows if r[0].startswith("raw")}
    bare_floor = {r[1]: r[2] for r in rows if "bare floor" in r[0]}
    for what, shape, r in rows:
        p50 = r.get("p50") or r.get("p50_ms")
        p99 = r.get("p99") or r.get("p99_ms")
        p999 = r.get("p99.9") or r.get("p99_9_ms") or r.get("p999_ms")
        per_s = r.get("per_s") or r.get("achieved") or r.get("achieved_rate") or r.get("requests_per_second")
        note = ""
        if what.startswith("in-process") and shape in floor and p99:
            note = (f"p99 {p99 / floor[shape]['p99']:.2f}x the floor ({p99 / bare_floor[shape]['p99']:.2f}x bare); "
                    f"gc pauses {r['gc_pauses']} (max {r['gc_max_ms']:.2f} ms)")
        lag = r.get("client_lag_p99_ms") or r.get("client_send_lag_p99_ms")
        if lag is not None:
            note += f"client lag p99 {lag:.3f} ms"
        if "errors" in r and r.get("errors"):
            note += f" errors {r['errors']} {r.get('error_kinds')}"
        if "error" in r:
            note = f"error: {r['error'][:120]}"
        fmt = lambda v, w: f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
        print(f"{what:40} {shape:9} {fmt(p50, 8)} {fmt(p99, 8)} {fmt(p999, 9)} {fmt(per_s, 9)}  {note}")


if __name__ == "__main__":
    main()
