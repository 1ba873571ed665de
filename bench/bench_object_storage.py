"""The lake on S3: write/read throughput, pruning, the two DuckDB routes, Parquet vs Lance.

    .venv/bin/python bench/bench_object_storage.py                 # 10M feature rows, 1M x 64 embeddings
    .venv/bin/python bench/bench_object_storage.py --quick         # 1M rows, 100k embeddings
    # the httpfs route, measured if this venv exists (DuckDB 1.5.5 + its httpfs wheel):
    python3 -m venv bench/.venv-httpfs
    bench/.venv-httpfs/bin/pip install duckdb==1.5.5 duckdb-extension-httpfs==1.5.5 pytz

Starts moto's S3 server on a free loopback port (stopped at the end) and measures, through
the same code the project runs (`Lake`, `Lake.register_duckdb`, `sync.offline.lance`):

1. write and full read of N feature rows (entity, event time, 10 float64 features, a year,
   partitioned by month) through DuckDB's fsspec route, and the same with DuckDB's httpfs
   extension (in bench/.venv-httpfs; DuckDB 2.x has no offline httpfs);
2. pruned reads: 1 of 10 features, and one week of the year (with and without the month
   predicate), in bytes fetched and requests made, next to the full read;
3. M x 64 float32 embeddings written as Parquet (as dbt writes them) and as Lance, then
   10k random-key lookups: one batch of 10k keys, and single-key lookups (a sample, timed
   per lookup and projected to 10k).

moto is a Python server on the same 2 cores: absolute MB/s are its ceiling, not S3's, and
it copies the whole object to answer each ranged GET (the calibration rows show the cost),
which inflates the time of random reads in large objects; requests and bytes are what a
real store would see. Compare ratios measured in one run. Prints a table (`--json FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
HTTPFS_PY = HERE / ".venv-httpfs" / "bin" / "python"
KEY, SECRET, REGION = "AKIABENCH", "bench-secret", "us-east-1"
WEEK = ("2025-06-02", "2025-06-09")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto_server did not start")


class CountingProxy:
    """A loopback TCP proxy that counts requests and response bytes.

    Lance talks to S3 from Rust (object_store), below the fsspec meter; pointing it at this
    proxy measures its requests and bytes the same way for both formats.
    """

    def __init__(self, upstream: str) -> None:
        import threading

        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.requests = self.bytes_read = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.bytes_read = 0

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        try:
            while data := src.recv(1 << 20):
                if response:
                    with self._lock:
                        self.bytes_read += len(data)
                        self.requests += data.count(b"HTTP/1.1 ")
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self._server.close()


def features_sql(rows: int) -> str:
    """Seeded feature rows over 2025, sorted by event time (as an append-only log is)."""
    cols = ", ".join(f"random() as f{i}" for i in range(10))
    return f"""select (hash(range) % 100000)::bigint as entity_id,
                      timestamptz '2025-01-01' + to_seconds((range * 31536000 // {rows})::bigint) as event_timestamp,
                      {cols}
               from range({rows})"""


def with_month(sql: str) -> str:
    return f"select *, date_trunc('month', event_timestamp)::date as event_month from ({sql})"


READS = {
    "full read (all 12 columns)": "select count(*), sum(entity_id), max(event_timestamp), "
                                  + ", ".join(f"sum(f{i})" for i in range(10)) + " from {src}",
    "1 of 10 features": "select count(*), sum(f3) from {src}",
    "1 feature + keys": "select count(entity_id), max(event_timestamp), sum(f3) from {src}",
    "1 week, month predicate": "select count(*), " + ", ".join(f"sum(f{i})" for i in range(10))
                               + " from {src} where event_month = date '2025-06-01' and event_timestamp >= "
                               f"timestamptz '{WEEK[0]}' and event_timestamp < timestamptz '{WEEK[1]}'",
    "1 week, timestamp only": "select count(*), " + ", ".join(f"sum(f{i})" for i in range(10))
                              + f" from {{src}} where event_timestamp >= timestamptz '{WEEK[0]}' "
                              f"and event_timestamp < timestamptz '{WEEK[1]}'",
}


# -- the fsspec route (this project's) ------------------------------------------------------
def fsspec_features(root: str, rows: int) -> list[dict]:
    import duckdb

    from sync.lake import Lake
    from sync.storage.metering import metered

    lake = Lake(root)
    target = lake.uri("features/bench")
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'; select setseed(0.42)")
    lake.register_duckdb(con)
    started = time.perf_counter()
    con.execute(f"copy ({with_month(features_sql(rows))}) to '{target}' (format parquet, partition_by event_month)")
    seconds = time.perf_counter() - started
    stored = sum(lake.fs.size(p) for p in lake.fs.find(lake.path("features/bench")))
    out = [{"what": "write feature rows", "route": "fsspec (s3fs)", "rows": rows, "bytes": stored,
            "requests": None, "seconds": seconds}]
    con.close()

    fs, meter = metered(lake.fs)
    reader = duckdb.connect()
    reader.execute("set TimeZone = 'UTC'; set enable_external_file_cache = false")
    reader.register_filesystem(fs)
    src = f"read_parquet('{target}/*/*.parquet', hive_partitioning = true)"
    for name, sql in READS.items():
        meter.reset()
        started = time.perf_counter()
        result = reader.execute(sql.format(src=src)).fetchall()
        out.append({"what": f"read: {name}", "route": "fsspec (s3fs)", "rows": int(result[0][0] or 0),
                    "bytes": meter.bytes_read,
                    "requests": meter.requests, "seconds": time.perf_counter() - started})
    return out


# -- the httpfs route, in DuckDB 1.5.5's own venv ----------------------------------------------
HTTPFS_SCRIPT = r"""
import json, sys, time, pathlib, duckdb, duckdb_extension_httpfs
args = json.loads(sys.argv[1])
ext = next(pathlib.Path(duckdb_extension_httpfs.__file__).parent.glob("extensions/*/httpfs.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute("set TimeZone = 'UTC'; set enable_progress_bar = false; select setseed(0.42)")
# every read measured cold: DuckDB would otherwise serve repeats from its file cache
con.execute("set enable_external_file_cache = false")
host = args["endpoint"].removeprefix("http://")
con.execute(f"CREATE SECRET lake (TYPE s3, KEY_ID '{args['key']}', SECRET '{args['secret']}', ENDPOINT '{host}', "
            f"URL_STYLE 'path', USE_SSL false, REGION '{args['region']}')")
out = []
t = time.perf_counter()
con.execute(f"copy ({args['write_sql']}) to '{args['target']}' (format parquet, partition_by event_month)")
out.append({"what": "write feature rows", "seconds": time.perf_counter() - t, "rows": args["rows"]})
src = f"read_parquet('{args['target']}/*/*.parquet', hive_partitioning = true)"
for name, sql in args["reads"].items():
    print("mark", flush=True)  # the parent resets its request counter here
    sys.stdin.readline()
    t = time.perf_counter()
    r = con.execute(sql.format(src=src)).fetchall()
    out.append({"what": "read: " + name, "seconds": time.perf_counter() - t, "rows": int(r[0][0] or 0)})
    print("done", flush=True)
    sys.stdin.readline()
print(json.dumps({"duckdb": duckdb.__version__, "results": out}), flush=True)
"""


def httpfs_features(endpoint: str, root: str, rows: int) -> list[dict]:
    if not HTTPFS_PY.exists():
        return [{"what": "httpfs route", "route": "httpfs", "note": f"skipped: no {HTTPFS_PY}"}]
    proxy = CountingProxy(endpoint)  # httpfs's requests and bytes, measured on the wire
    args = {"endpoint": proxy.url, "key": KEY, "secret": SECRET, "region": REGION, "rows": rows,
            "target": f"{root}/features/bench-httpfs", "write_sql": with_month(features_sql(rows)), "reads": READS}
    proc = subprocess.Popen([str(HTTPFS_PY), "-c", HTTPFS_SCRIPT, json.dumps(args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wire = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            if line.startswith("mark"):
                proxy.reset()
            elif line.startswith("done"):
                wire.append((proxy.bytes_read, proxy.requests))
            else:
                break
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(600)
    finally:
        proxy.close()
    if proc.returncode != 0:
        return [{"what": "httpfs route", "route": "httpfs", "note": "failed: " + (proc.stderr.read() or "")[-300:]}]
    data = json.loads(line)
    results = [{**r, "route": f"httpfs (duckdb {data['duckdb']})", "bytes": None, "requests": None}
               for r in data["results"]]
    for r, (nbytes, requests) in zip(results[1:], wire):
        r.update(bytes=nbytes, requests=requests, wire=True)
    return results


# -- embeddings: Parquet vs Lance -----------------------------------------------------------------
def embeddings(root: str, count: int, lookups: int, single_parquet: int, single_lance: int) -> list[dict]:
    import duckdb
    import numpy as np
    import pyarrow as pa

    from sync.definitions import Feature, FeatureView, OfflineLocation
    from sync.lake import Lake
    from sync.offline import lance as lance_copy
    from sync.storage.metering import metered

    lake = Lake(root)
    view = FeatureView("bench_embedding", ("merchant",), ("merchant_id",), "computed_at",
                       (Feature("embedding", "float32[64]"),), "bench",
                       offline=OfflineLocation("parquet", "features/bench_embedding.parquet"))
    target = lake.uri(view.offline.path)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, 64), dtype=np.float32)
    table = pa.table({"merchant_id": pa.array(np.arange(count, dtype=np.int64)),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 64)})
    out = []
    con = duckdb.connect()
    lake.register_duckdb(con)
    con.register("emb", table)
    started = time.perf_counter()
    # as dbt writes an embedding view: DuckDB FLOAT[64], Parquet list, key order
    con.execute(f"copy (select merchant_id, timestamptz '2026-10-01' as computed_at, embedding::FLOAT[64] as embedding "
                f"from emb order by merchant_id) to '{target}' (format parquet)")
    out.append({"what": "write embeddings", "route": "Parquet (fsspec)", "rows": count,
                "bytes": lake.fs.size(lake.path(view.offline.path)), "seconds": time.perf_counter() - started})
    started = time.perf_counter()
    state = lance_copy.mirror(lake, view)
    lance_bytes = sum(lake.fs.size(p) for p in lake.fs.find(lake.path(lance_copy.lance_path(view))))
    out.append({"what": "write embeddings (+ B-tree on key)", "route": "Lance", "rows": state["rows"],
                "bytes": lance_bytes, "seconds": time.perf_counter() - started})

    fs, meter = metered(lake.fs)
    reader = duckdb.connect()
    reader.execute("set enable_external_file_cache = false")
    reader.register_filesystem(fs)
    started = time.perf_counter()
    n = reader.execute(f"select count(*), sum(list_sum(embedding)) from read_parquet('{target}')").fetchall()[0][0]
    out.append({"what": "read all embeddings", "route": "Parquet (fsspec)", "rows": n, "bytes": meter.bytes_read,
                "requests": meter.requests, "seconds": time.perf_counter() - started})
    started = time.perf_counter()
    n = sum(b.num_rows for b in lance_copy.batches(lake, view, columns=["embedding"], verify=False))
    out.append({"what": "read all embeddings (batches)", "route": "Lance", "rows": n,
                "seconds": time.perf_counter() - started})

    keys = rng.choice(count, size=lookups, replace=False).astype(np.int64)
    batch_sizes = sorted({min(100, lookups), lookups})
    for size in batch_sizes:
        reader.register("wanted", pa.table({"k": pa.array(keys[:size])}))
        batch_sql = ("select merchant_id, embedding from read_parquet('" + target + "') "
                     "where merchant_id in (select k from wanted)")
        meter.reset()
        started = time.perf_counter()
        got = reader.sql(batch_sql).to_arrow_table().num_rows
        out.append({"what": f"{size:,} random keys, one batch", "route": "Parquet (fsspec)", "rows": got,
                    "bytes": meter.bytes_read, "requests": meter.requests, "seconds": time.perf_counter() - started})

    # Lance through the counting proxy (its client reads AWS_ENDPOINT_URL when it opens)
    proxy = CountingProxy(os.environ["AWS_ENDPOINT_URL"])
    direct = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = proxy.url
    try:
        counted = Lake(root)
        proxy.reset()
        started = time.perf_counter()
        dataset = lance_copy.open_copy(counted, view, verify=False)  # once, as a server would
        lance_copy.lookup(counted, view, [0], dataset=dataset)  # loads the key's B-tree
        out.append({"what": "open + first lookup (manifest, B-tree)", "route": "Lance", "rows": None,
                    "bytes": proxy.bytes_read, "requests": proxy.requests, "seconds": time.perf_counter() - started})
        for size in batch_sizes:
            proxy.reset()
            started = time.perf_counter()
            got = lance_copy.lookup(counted, view, keys[:size].tolist(), columns=["merchant_id", "embedding"],
                                    dataset=dataset).num_rows
            out.append({"what": f"{size:,} random keys, one batch", "route": "Lance", "rows": got,
                        "bytes": proxy.bytes_read, "requests": proxy.requests,
                        "seconds": time.perf_counter() - started})

        def single(fn, sample: int) -> tuple[float, float]:
            times = []
            for k in keys[:sample]:
                started = time.perf_counter()
                fn(int(k))
                times.append(time.perf_counter() - started)
            return statistics.median(times), sum(times) / len(times)

        meter.reset()
        p50, mean = single(lambda k: reader.execute(f"select embedding from read_parquet('{target}') "
                                                    f"where merchant_id = {k}").fetchall(), single_parquet)
        out.append({"what": f"single-key lookup (p50 {p50 * 1e3:.0f} ms, n={single_parquet}), projected x{lookups:,}",
                    "route": "Parquet (fsspec)", "rows": lookups,
                    "bytes": meter.bytes_read // single_parquet * lookups,
                    "requests": meter.requests // single_parquet * lookups, "seconds": mean * lookups,
                    "projected": True})
        proxy.reset()
        p50, mean = single(lambda k: lance_copy.lookup(counted, view, [k], columns=["embedding"], dataset=dataset),
                           single_lance)
        out.append({"what": f"single-key lookup (p50 {p50 * 1e3:.1f} ms, n={single_lance}), projected x{lookups:,}",
                    "route": "Lance", "rows": lookups, "bytes": proxy.bytes_read // single_lance * lookups,
                    "requests": proxy.requests // single_lance * lookups, "seconds": mean * lookups,
                    "projected": True})
    finally:
        os.environ["AWS_ENDPOINT_URL"] = direct
        proxy.close()
    return out


def moto_range_cost(endpoint: str) -> list[dict]:
    """moto copies a whole object to answer a ranged GET: calibrate what a random read costs."""
    import boto3

    s3 = boto3.client("s3")
    out = []
    for size in (1 << 20, 256 << 20):
        s3.put_object(Bucket="bench-lake", Key=f"calibrate/{size}", Body=os.urandom(size))
        started = time.perf_counter()
        for i in range(20):
            s3.get_object(Bucket="bench-lake", Key=f"calibrate/{size}", Range=f"bytes={i * 4096}-{i * 4096 + 4095}")[
                "Body"].read()
        out.append({"what": f"calibration: 4 KiB ranged GET from a {size >> 20} MiB object", "route": "moto",
                    "rows": None, "bytes": 20 * 4096, "requests": 20, "seconds": (time.perf_counter() - started) / 20,
                    "per_request": True})
        s3.delete_object(Bucket="bench-lake", Key=f"calibrate/{size}")
    return out


# -- report ---------------------------------------------------------------------------------------
def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def print_table(rows: list[dict], full_bytes: int | None) -> None:
    head = ["measurement", "route", "rows", "bytes fetched/stored", "% of full", "requests", "seconds", "rows/s", "MB/s"]
    lines = []
    for r in rows:
        if "note" in r:
            lines.append([r["what"], r["route"], r["note"], "", "", "", "", "", ""])
            continue
        secs = r.get("seconds") or 0
        b = r.get("bytes")
        share = f"{100 * b / full_bytes:.1f}%" if b is not None and full_bytes and r["what"].startswith("read:") else ""
        rows_n = r.get("rows")
        lines.append([r["what"], r["route"], f"{rows_n:,}" if rows_n is not None else "-", fmt_bytes(b), share,
                      f"{r['requests']:,}" if r.get("requests") is not None else "-",
                      f"{secs:.3f} per request" if r.get("per_request") else
                      f"{secs:.2f}" + (" (proj.)" if r.get("projected") else ""),
                      f"{rows_n / secs:,.0f}" if rows_n and secs else "-",
                      f"{b / secs / 2**20:,.1f}" if b and secs and not r.get("per_request") else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--embeddings", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--single-parquet", type=int, default=10, help="single-key Parquet lookups to time")
    parser.add_argument("--single-lance", type=int, default=200, help="single-key Lance lookups to time")
    parser.add_argument("--quick", action="store_true", help="1M rows, 100k embeddings")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.embeddings = 1_000_000, 100_000

    proc, endpoint = start_moto()
    try:
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                          AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench-lake")
        root = "s3://bench-lake/lake"
        with tempfile.TemporaryDirectory():
            results = fsspec_features(root, args.rows)
            results += httpfs_features(endpoint, root, args.rows)
            results += embeddings(root, args.embeddings, args.lookups, args.single_parquet, args.single_lance)
            results += moto_range_cost(endpoint)
    finally:
        proc.terminate()
        proc.wait(10)
    full = next((r["bytes"] for r in results if r["what"].startswith("read: full") and r.get("bytes")), None)
    print(f"\nbench_object_storage: {args.rows:,} feature rows, {args.embeddings:,} x 64 embeddings, "
          f"moto S3 on loopback ({os.cpu_count()} cores)\n")
    print_table(results, full)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
