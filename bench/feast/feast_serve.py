"""Feast's HTTP feature server (`feast serve`, one worker, default settings) under open-loop load.

    bench/.venv-feast/bin/python bench/feast/feast_serve.py --data DIR [--redis 127.0.0.1:PORT] \\
        --entities-per-request 1 --rate 200 --duration 30
    bench/.venv-feast/bin/python bench/feast/feast_serve.py --data DIR --entities-per-request 1 \\
        --find-max [--p99-bound-ms 100] [--rate 50] [--duration 15]

DIR is a `serve` dataset; it is materialized first unless Redis already holds it. Requests
to POST /get-online-features (all features of all views, random entities) are sent on a
fixed schedule whatever the server's pace (open loop), and latency counts from each
request's scheduled time, so a server that falls behind is charged for the queueing.
--find-max raises the rate step by step and reports the highest one sustained with
p99 <= the bound, no errors and >= 95% of the target rate achieved. The server is always
stopped. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from common import (
    LOOPBACK,
    PeakRss,
    apply,
    emit,
    feast_repo,
    free_port,
    guard_stdout,
    percentiles_ms,
    redis_for,
)
from serving import PROJECT, ServeDataset

REQUEST_TIMEOUT_S = 10
MAX_IN_FLIGHT = 5_000  # beyond this the client counts a request as dropped, not sent
BODY_POOL = 20_000  # distinct pre-encoded request bodies, cycled
MAX_STEPS = 14
MIN_RATE = 1.0
JSON = {"Content-Type": "application/json"}


def start_server(repo: Path, port: int, extra: list[str]) -> subprocess.Popen:
    feast = Path(sys.executable).parent / "feast"
    # The server (its access log included) writes to a file; the child keeps its own fd.
    with open(repo / "feast_serve.log", "wb") as log:
        # Own session, so the whole tree (gunicorn master + worker) can be signalled at once.
        return subprocess.Popen(
            [str(feast), "-c", str(repo), "serve", "--host", LOOPBACK, "--port", str(port), *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (gunicorn shuts down gracefully), SIGKILL after 40 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Reap anything left in the group (a worker outliving its master).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"feast serve exited with code {proc.returncode}")
            try:
                async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"feast serve not ready after {timeout}s")


async def run_load(url: str, bodies: list[bytes], rate: float, duration: float) -> dict[str, Any]:
    """Send rate*duration requests on a fixed schedule; return achieved rate and latencies."""
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    in_flight = 0

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=JSON) as session:

        async def one(body: bytes, scheduled: float) -> None:
            nonlocal in_flight
            in_flight += 1
            lags.append(time.perf_counter() - scheduled)
            try:
                async with session.post(f"{url}/get-online-features", data=body) as r:
                    await r.read()
                    if r.status == 200:
                        latencies.append(time.perf_counter() - scheduled)
                    else:
                        error(f"http_{r.status}")
            except asyncio.TimeoutError:
                error("timeout")
            except aiohttp.ClientError as e:
                error(type(e).__name__)
            finally:
                in_flight -= 1

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= MAX_IN_FLIGHT:
                error("dropped_client_overload")
                continue
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], scheduled)))
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
        elapsed = time.perf_counter() - start
    return {
        "target_rate": rate,
        "duration_s": duration,
        "sent": len(tasks),
        "ok": len(latencies),
        "achieved_rate": round(len(latencies) / elapsed, 1),
        **percentiles_ms(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_send_lag_p99_ms": round(float(np.percentile(lags, 99)) * 1000, 3) if lags else None,
    }


async def probe(url: str, body: bytes) -> float:
    """One request, checked: the fraction of returned values that are present (~0.99)."""
    async with aiohttp.ClientSession(headers=JSON) as session:
        async with session.post(f"{url}/get-online-features", data=body) as r:
            if r.status != 200:
                raise RuntimeError(f"probe request failed: HTTP {r.status}: {await r.text()}")
            results = (await r.json())["results"][1:]  # the first column is the entity key
    statuses = [s for column in results for s in column["statuses"]]
    return round(sum(s == "PRESENT" for s in statuses) / len(statuses), 4)


def sustained(step: dict[str, Any], p99_bound_ms: float) -> bool:
    return (
        step["errors"] == 0
        and step["p99_ms"] is not None
        and step["p99_ms"] <= p99_bound_ms
        and step["achieved_rate"] >= 0.95 * step["target_rate"]
    )


async def find_max(url: str, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """Grow the rate x1.5 until a step fails (or halve it while none passes), then bisect
    between the highest pass and the lowest fail, to within 5%."""
    steps: list[dict[str, Any]] = []
    good, bad = 0.0, None
    rate = args.rate
    for _ in range(MAX_STEPS):
        step = await run_load(url, bodies, rate, args.duration)
        step["sustained"] = sustained(step, args.p99_bound_ms)
        steps.append(step)
        print(json.dumps(step), file=sys.stderr)
        if step["sustained"]:
            good = rate
        else:
            bad = rate
        if bad is None:
            rate = round(rate * 1.5, 1)
        elif not good:  # even the first rate failed: halve until one passes
            if rate / 2 < MIN_RATE:
                break
            rate = round(rate / 2, 1)
        elif bad - good <= max(1.0, 0.05 * bad):
            break
        else:
            rate = round((good + bad) / 2, 1)
        await asyncio.sleep(2)  # let the server drain between steps
    best = max((s for s in steps if s["sustained"]), key=lambda s: s["target_rate"], default=None)
    return {"max_sustained_rate": good, "p99_bound_ms": args.p99_bound_ms, "at_max": best, "steps": steps}


def request_bodies(data: ServeDataset, per_request: int, n: int, seed: int) -> list[bytes]:
    """Pre-encoded JSON bodies, so the client spends its CPU on sending, not encoding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, data.entities, (n, per_request)).tolist()
    return [
        json.dumps({"features": data.feature_refs, "entities": {"entity_id": row}}).encode()
        for row in ids
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset from `datagen.py serve`")
    p.add_argument("--redis", help="127.0.0.1:PORT of a running Redis (default: start one)")
    p.add_argument("--entities-per-request", type=int, default=1)
    p.add_argument("--rate", type=float, default=50, help="requests/s (the first rate with --find-max)")
    p.add_argument("--duration", type=float, default=30, help="seconds per run or per --find-max step")
    p.add_argument("--find-max", action="store_true", help="step the rate up to the highest sustained")
    p.add_argument("--p99-bound-ms", type=float, default=100)
    p.add_argument("--server-args", default="", help="extra `feast serve` options (default: none)")
    p.add_argument("--skip-materialize", action="store_true", help="assume Redis already holds the views")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    guard_stdout()

    data = ServeDataset(args.data)
    n_bodies = BODY_POOL if args.find_max else min(BODY_POOL, max(1000, int(args.rate * args.duration)))
    bodies = request_bodies(data, args.entities_per_request, n_bodies, args.seed)
    result: dict[str, Any] = {}
    with PeakRss() as rss, redis_for(args.redis, rss) as redis, feast_repo(PROJECT, redis, data.definitions) as repo:
        store, _, apply_s = apply(repo)
        result["apply_seconds"] = round(apply_s, 3)
        result["materialized_now"] = not args.skip_materialize and not data.is_materialized(store)
        if result["materialized_now"]:
            result |= data.materialize(store)

        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        server = start_server(repo, port, shlex.split(args.server_args))
        try:
            with PeakRss(root=server.pid) as server_rss:
                result["server_ready_seconds"] = round(asyncio.run(wait_ready(url, server)), 3)
                result["probe_present_fraction"] = asyncio.run(probe(url, bodies[0]))
                if args.find_max:
                    result |= asyncio.run(find_max(url, bodies, args))
                else:
                    result |= asyncio.run(run_load(url, bodies, args.rate, args.duration))
        finally:
            stop_server(server)
            # gunicorn recycles a worker after --max-requests (1000 by default); each
            # recycle boots a fresh worker, which shows up as latency spikes and resets.
            log = (repo / "feast_serve.log").read_text(errors="replace")
            result["server_worker_restarts"] = log.count("Maximum request limit of")

    emit(
        {
            "benchmark": "feast_serve",
            "feast_online_store": "redis",
            "server": "feast serve (gunicorn + uvicorn worker, --workers 1) " + (args.server_args or "defaults"),
            "data": str(args.data),
            "entities": data.entities,
            "features": len(data.feature_refs),
            "entities_per_request": args.entities_per_request,
            **result,
            "server_peak_rss_mb": server_rss.mb,
            "peak_rss_mb": rss.mb,  # this client + the server tree
        }
    )


if __name__ == "__main__":
    main()
