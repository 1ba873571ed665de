"""Point-in-time join benchmark: this project vs a hand-written ASOF join vs Feast 0.67.

    .venv/bin/python bench/datagen.py pit --out bench/data/pit --entity-rows 1000000 \\
        --entities 100000 --feature-rows 10000000
    bench/feast/setup.sh                       # Feast in its own venv (optional)
    .venv/bin/python bench/bench_historical.py --data bench/data/pit

The dataset is an append-only log with late corrections. First the feature view is built
from it as `dbt build` builds every view on DuckDB (resolved: one row per entity and event
time, the latest correction; time printed). Then, with a 2-day TTL and without one, on those
same built files: seconds and peak memory for the Python API (get_historical_features), the
dbt macro (`dbt run` of a training model), a plain DuckDB ASOF join (no tie-break, no TTL:
the floor), and Feast's DuckDB offline store; plus the API on the unbuilt log (exact form). `--big DIR --memory-limit 2GB` also runs the Python API on a larger
dataset (e.g. 100M feature rows) with DuckDB's memory limit below the data size.
Each measurement runs in its own process, so peak memory is that method's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
FEAST_PY = HERE / ".venv-feast" / "bin" / "python"


def _features(data: Path) -> list[str]:
    schema = pq.read_schema(next((data / "features").glob("*.parquet")))
    return [n for n in schema.names if n.startswith("f")]


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


# -- one measurement per process ---------------------------------------------------------
def run_api(data: Path, ttl: int, memory_limit: str | None) -> dict:
    from sync.definitions import Entity, Feature, FeatureRef, FeatureView, OfflineLocation
    from sync.lake import Lake
    from sync.offline.historical import connect, get_historical_features

    names = _features(data)
    view = FeatureView("bench", ("entity",), ("entity_id",), "event_timestamp",
                       tuple(Feature(n, "float64") for n in names), "bench",
                       created_timestamp="created_timestamp", ttl_seconds=ttl or None,
                       offline=OfflineLocation("parquet", "features"))
    entities = pq.read_table(data / "entities.parquet")
    con = connect(memory_limit=memory_limit)
    started = time.perf_counter()
    out = get_historical_features(Lake(str(data)), {"bench": view}, {"entity": Entity("entity", ("entity_id",), "int64")},
                                  entities, [FeatureRef("bench", n) for n in names], con=con)
    return {"seconds": time.perf_counter() - started, "rows": out.num_rows}


def run_asof(data: Path, ttl: int, memory_limit: str | None) -> dict:
    import duckdb

    entities = pq.read_table(data / "entities.parquet")
    con = duckdb.connect()
    cols = ", ".join(f"f.{n}" for n in _features(data))
    started = time.perf_counter()
    out = con.sql(f"select e.*, {cols} from entities e asof left join read_parquet('{data}/features/*.parquet') f "
                  "on e.entity_id = f.entity_id and e.event_timestamp >= f.event_timestamp").to_arrow_table()
    return {"seconds": time.perf_counter() - started, "rows": out.num_rows}


def _dbt_project(built: Path, ttl: int, names: list[str]) -> Path:
    """A dbt project whose feature view `bench_view` is the raw log built into the lake the
    way this project builds every view on DuckDB (external, resolved: see
    macros/feature_store/write_to_file.sql), and a training model using the macro."""
    raw = built.parent
    project = built / "dbt"
    package = project.parent / "feature_store_package"
    if not package.exists():
        shutil.copytree(ROOT / "macros", package / "macros")
        (package / "dbt_project.yml").write_text("name: feature_store\nversion: '1.0.0'\nconfig-version: 2\nmacro-paths: [macros]\nmodel-paths: []\n")
    (project / "models").mkdir(parents=True, exist_ok=True)
    (project / "macros").mkdir(exist_ok=True)
    # a project using the package enables resolved views with this one root macro
    (project / "macros" / "write_to_file.sql").write_text(
        "{% macro write_to_file(relation, location, options) -%}\n"
        "  {{ feature_store.write_to_file(relation, location, options) }}\n{%- endmacro %}\n")
    (project / "packages.yml").write_text(f"packages:\n  - local: {package}\n")
    (project / "dbt_project.yml").write_text(
        "name: bench_pit\nversion: '1.0.0'\nconfig-version: 2\nprofile: bench_pit\nmodel-paths: [models]\nmacro-paths: [macros]\n"
        "flags: {send_anonymous_usage_stats: false}\nmodels:\n  bench_pit:\n    +materialized: view\n"
        "    +meta: {feature_store: {entities: {entity: {join_keys: [entity_id], value_type: int64}}}}\n")
    (project / "profiles.yml").write_text(
        f"bench_pit:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n      path: {project}/bench.duckdb\n"
        "      threads: 1\n      settings: {TimeZone: UTC}\n")
    (project / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: bench\n    schema: main\n    tables:\n"
        f"      - name: features\n        config: {{meta: {{external_location: \"{raw}/features/*.parquet\"}}}}\n"
        f"      - name: entities\n        config: {{meta: {{external_location: \"{raw}/entities.parquet\"}}}}\n")
    (project / "models" / "bench_view.sql").write_text(
        f"{{{{ config(materialized='external', location='{built}/features/bench_view.parquet') }}}}\n"
        "select * from {{ source('bench', 'features') }}\n")
    (project / "models" / "spine.sql").write_text("select * from {{ source('bench', 'entities') }}")
    cols = "\n".join(f"      - name: {n}\n        data_type: float64" for n in names)
    ttl_line = f"          ttl: {ttl}\n" if ttl else ""
    (project / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: bench_view\n    config:\n      meta:\n        feature_view:\n"
        "          entities: [entity]\n          event_timestamp: event_timestamp\n"
        f"          created_timestamp: created_timestamp\n{ttl_line}          owner: bench\n"
        f"    columns:\n      - name: entity_id\n      - name: event_timestamp\n      - name: created_timestamp\n{cols}\n")
    (project / "models" / "train.sql").write_text(
        "{{ config(materialized='table') }}\n"
        "{{ feature_store.point_in_time_join(spine=ref('spine'), features=['bench_view:*']) }}\n")
    return project


def _dbt(project: Path, *args: str) -> tuple[float, float]:
    """Run dbt in the project; (seconds the first selected model ran, wall seconds)."""
    dbt = [str(Path(sys.executable).parent / "dbt")]
    flags = ["--project-dir", str(project), "--profiles-dir", str(project)]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    started = time.perf_counter()
    proc = subprocess.run(dbt + list(args) + flags, capture_output=True, text=True, env=env, cwd=project)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:])
    if args[0] != "run":
        return 0.0, wall
    results = json.loads((project / "target" / "run_results.json").read_text())["results"]
    return results[0]["execution_time"], wall


def run_build(raw: Path, ttl: int, memory_limit: str | None) -> dict:
    """`dbt run` of the feature view: the raw log -> resolved, sorted, marked Parquet in built/."""
    built = raw / "built"
    (built / "features").mkdir(parents=True, exist_ok=True)
    project = _dbt_project(built, 0, _features(raw))
    _dbt(project, "deps")
    seconds, wall = _dbt(project, "run", "-s", "bench_view", "spine")
    entities = built / "entities.parquet"
    if not entities.exists():
        entities.symlink_to(raw / "entities.parquet")
    rows = pq.read_metadata(built / "features" / "bench_view.parquet").num_rows
    return {"seconds": seconds, "dbt_wall_seconds": wall, "rows": rows}


def run_macro(data: Path, ttl: int, memory_limit: str | None) -> dict:
    project = _dbt_project(data, ttl, _features(data))  # data is the built dataset
    seconds, wall = _dbt(project, "run", "-s", "train")
    return {"seconds": seconds, "dbt_wall_seconds": wall, "rows": None}


def run_feast(data: Path, ttl: int, memory_limit: str | None) -> dict:
    proc = subprocess.run([str(FEAST_PY), str(HERE / "feast" / "feast_historical.py"), "--data", str(data),
                           "--ttl-seconds", str(ttl)], capture_output=True, text=True)
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": out.get("seconds") or out.get("get_historical_features_seconds"), "rows": out.get("rows"), "feast": out}


METHODS = {"api": run_api, "macro": run_macro, "asof": run_asof, "feast": run_feast, "build": run_build}
LABELS = {"api": "this project: get_historical_features", "macro": "this project: dbt macro (model run time)",
          "asof": "plain DuckDB ASOF join (no tie-break, no TTL)", "feast": "Feast 0.67 DuckDB offline store",
          "raw_api": "get_historical_features on the raw log (exact tie-break form)"}


def measure(method: str, data: Path, ttl: int, memory_limit: str | None = None) -> dict:
    args = [sys.executable, __file__, "--one", method, "--data", str(data), "--ttl", str(ttl)]
    if memory_limit:
        args += ["--memory-limit", memory_limit]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout).strip()[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE / "data" / "pit")
    parser.add_argument("--ttl", type=int, default=2 * 86400, help="TTL seconds for the TTL runs (default 2 days)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["api", "macro", "asof", "feast", "raw_api"])
    parser.add_argument("--big", type=Path, help="a larger pit dataset for the out-of-memory run")
    parser.add_argument("--memory-limit", default=None)
    parser.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        result = METHODS[args.one](args.data.resolve(), args.ttl, args.memory_limit)
        result["peak_mb"] = _peak_mb()
        print(json.dumps(result))
        return

    data = args.data.resolve()
    if not (data / "entities.parquet").exists():
        raise SystemExit(f"no dataset at {data}: run bench/datagen.py pit --out {data} ... first")
    methods = [m for m in ("api", "macro", "asof", "feast") if m not in args.skip and (m != "feast" or FEAST_PY.exists())]
    print(f"dataset {data}: {pq.read_metadata(data / 'entities.parquet').num_rows:,} entity rows x "
          f"{sum(pq.read_metadata(p).num_rows for p in (data / 'features').glob('*.parquet')):,} feature rows "
          f"(an append-only log with late corrections), {len(_features(data))} features")
    # once, as `dbt build` does: the view is built from the log, corrections resolved
    build = measure("build", data, 0)
    if "error" in build:
        raise SystemExit(f"building the feature view failed: {build['error']}")
    built = data / "built"
    print(f"feature view built by `dbt run` (resolve corrections, sort by event time, write): {build['seconds']:.1f}s "
          f"(dbt wall {build['dbt_wall_seconds']:.1f}s), peak {build['peak_mb']:.0f} MB, {build['rows']:,} rows; "
          "every method below reads these same files\n")
    rows = []
    for ttl in (args.ttl, 0):
        results = {m: measure(m, built, ttl) for m in methods}
        if "raw_api" not in args.skip:
            results["raw_api"] = measure("api", data, ttl)  # the same API on the unbuilt log, for reference
        floor = results.get("asof", {}).get("seconds")
        feast = results.get("feast", {}).get("seconds")
        for m, r in results.items():
            if "error" in r:
                rows.append((f"{ttl // 3600}h" if ttl else "none", LABELS[m], "error", "", "", "", r["error"][:200]))
                continue
            secs = r["seconds"]
            rows.append((f"{ttl // 3600}h" if ttl else "none", LABELS[m], f"{secs:.2f}", f"{r['peak_mb']:.0f}",
                         f"{secs / floor:.2f}x" if floor else "", f"{feast / secs:.1f}x" if feast and m != "feast" else "",
                         f"dbt wall {r['dbt_wall_seconds']:.1f}s" if "dbt_wall_seconds" in r else ""))
    header = ("ttl", "method", "seconds", "peak MB", "vs plain ASOF", "Feast is slower by", "note")
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    if args.big:
        big = args.big.resolve()
        limit = args.memory_limit or "2GB"
        size = sum(p.stat().st_size for p in (big / "features").glob("*.parquet"))
        r = measure("api", big, args.ttl, limit)
        print(f"\nout of core: {sum(pq.read_metadata(p).num_rows for p in (big / 'features').glob('*.parquet')):,} feature rows "
              f"({size / 1e9:.1f} GB Parquet) with memory_limit={limit}: "
              + (f"{r['seconds']:.1f}s, peak {r['peak_mb']:.0f} MB" if "seconds" in r else f"failed: {r['error']}")
              + " (get_historical_features on the unbuilt log: the exact tie-break form)")


if __name__ == "__main__":
    main()
