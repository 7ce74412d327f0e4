"""Embedded-mode figures: per-step overhead, big fan-outs, efficiency."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import flows
from benchmarks.tools import registry
from executor import FlowExecutor


def _median(f: Any, repeats: int) -> float:
    return statistics.median(f() for _ in range(repeats))


def chain_overhead_us(n: int = 200, tool: str = "noop", repeats: int = 9) -> float:
    """Microseconds per step of a chain of no-op tools (run wall time / steps)."""
    ex = FlowExecutor(registry=registry)
    flow = flows.chain(n, tool)
    ex.run(flow)  # warm up: imports, pydantic schemas, the loop thread

    def once() -> float:
        r = ex.run(flow)
        assert r.status == "succeeded"
        return (r.wall_time or 0) / n * 1e6

    try:
        return _median(once, repeats)
    finally:
        ex.close()


def efficiency(flow_name: str, repeats: int = 5) -> float:
    """critical_path_time / wall_time of the uneven DAG or the 10×10 lattice."""
    flow = flows.uneven() if flow_name == "uneven" else flows.lattice(10)
    ex = FlowExecutor(registry=registry)
    ex.run(flow)

    def once() -> float:
        r = ex.run(flow)
        assert r.status == "succeeded"
        return r.critical_path_time / (r.wall_time or 1)

    try:
        return _median(once, repeats)
    finally:
        ex.close()


def io_wall_ratio(n: int = 500, seconds: float = 0.05, repeats: int = 5) -> float:
    """Wall time beyond the root of n concurrent sleeps, over one sleep."""
    ex = FlowExecutor(registry=registry)
    flow = flows.io_fan(n, seconds)

    def once() -> float:
        r = ex.run(flow)
        assert r.status == "succeeded"
        first = min(r.steps[f"io{i}"].queued_at for i in range(n))  # type: ignore[type-var]
        last = max(r.steps[f"io{i}"].finished_at for i in range(n))  # type: ignore[type-var]
        return (last - first).total_seconds() / seconds

    try:
        return _median(once, repeats)
    finally:
        ex.close()


def fan_out_child(n: int) -> None:
    """Run in a fresh process: time and peak memory of one n-leaf fan-out."""
    ex = FlowExecutor(registry=registry)
    flow = flows.fan_out(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = ex.run(flow)
    seconds = time.perf_counter() - t0
    assert r.status == "succeeded", r.error
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "base_mb": before / 1024}))


def fan_out(n: int = 10_000, repeats: int = 3) -> dict[str, float]:
    """Seconds and peak RSS (MB) of an n-leaf fan-out, each in a fresh process."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from benchmarks.embedded import fan_out_child; fan_out_child({n})",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
    }


def chain_call_us(n: int = 1000, tool: str = "noop_sync", repeats: int = 9) -> dict[str, float]:
    """µs a step of an n-step chain, timed around `run` (validation, scheduling, the
    records: what the caller waits, as Dask's `get` is timed), and by `wall_time`."""
    ex = FlowExecutor(registry=registry)
    flow = flows.chain(n, tool)
    ex.run(flow)  # warm up: imports, pydantic schemas, the loop thread
    calls, walls = [], []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = ex.run(flow)
            calls.append((time.perf_counter() - t0) / n * 1e6)
            assert r.status == "succeeded"
            walls.append((r.wall_time or 0) / n * 1e6)
    finally:
        ex.close()
    return {"call_us": statistics.median(calls), "wall_time_us": statistics.median(walls)}
