"""Open-loop HTTP load at a fixed request rate: requests leave on schedule whatever the
server's latency, so queueing shows up in the percentiles (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np

MAX_IN_FLIGHT = 2000


async def _run(url: str, bodies: list[bytes], rate: float, duration: float, headers: dict[str, str]) -> dict:
    n = max(1, int(rate * duration))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    in_flight = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json", **headers},
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(body: bytes, scheduled: float) -> None:
            nonlocal in_flight
            in_flight += 1
            try:
                async with session.post(url, data=body) as r:
                    await r.read()
                    if r.status == 200:
                        latencies.append(time.perf_counter() - scheduled)
                    else:
                        errors[f"http_{r.status}"] = errors.get(f"http_{r.status}", 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
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
                errors["client_overload"] = errors.get("client_overload", 0) + 1
                continue
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], scheduled)))
        await asyncio.wait(tasks, timeout=60)
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    pct = {f"p{p}": round(float(np.percentile(lat, p)), 3) if len(lat) else None for p in (50, 99, 99.9)}
    return {"rate": rate, "achieved": round(len(latencies) / elapsed, 1), "ok": len(latencies),
            "errors": sum(errors.values()), "error_kinds": errors, **pct}


def run(url: str, bodies: list[bytes], rate: float, duration: float, headers: dict[str, str] | None = None) -> dict:
    return asyncio.run(_run(url, bodies, rate, duration, headers or {}))


def find_max(url: str, bodies: list[bytes], start: float, duration: float, p99_bound_ms: float = 100.0,
             headers: dict[str, str] | None = None) -> dict:
    """The highest rate (stepping up x1.25) sustained with no errors, p99 under the bound
    and at least 95% of the target achieved."""
    best, rate = None, start
    while rate < 100_000:
        step = run(url, bodies, rate, duration, headers)
        if step["errors"] or step["p99"] is None or step["p99"] > p99_bound_ms or step["achieved"] < 0.95 * rate:
            break
        best, rate = step, rate * 1.25
    return best or {"rate": start, "achieved": 0.0, "note": "not sustained even at the first rate"}
