"""Distributed figures, each beside its physical limit or its peer, in one run.

Starts its own redis-server on a free port and real worker processes, like the tests.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks import flows, spread
from benchmarks.spread import Measured
from benchmarks.tools import registry
from executor import FlowExecutor
from tests.support.servers import ROOT, RedisServer, WorkerProcess


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def round_trips_here(url: str, n: int = 2000) -> dict[str, float]:
    """PING and EVALSHA p50 in milliseconds from this process, on a fresh connection."""
    client = redis.Redis.from_url(url)
    script = client.register_script("return redis.call('GET', KEYS[1])")
    script(keys=["bench:x"])
    out = {}
    for name, call in (("ping_ms", client.ping), ("evalsha_ms", lambda: script(keys=["bench:x"]))):
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(samples)
    client.close()
    return out


def round_trips(url: str, n: int = 2000) -> dict[str, float]:
    """The physical limit of one hop: PING and EVALSHA p50 (ms), measured by a fresh
    client process (no executor threads beside it, like a worker's own connection)."""
    code = "import json; from benchmarks.distributed import round_trips_here as f; "
    code += f"print(json.dumps(f({url!r}, {n})))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


class Cluster:
    """A redis-server plus `dagrelay worker --processes P --threads T` (one process group)."""

    def __init__(self, threads: int = 8, processes: int = 1, async_steps: int = 0) -> None:
        self.server = RedisServer().start()
        self.threads, self.processes = threads, processes
        env = {"DAGRELAY_ASYNC_STEPS": str(async_steps)} if async_steps else None
        self.worker = WorkerProcess(
            self.server.url, "benchmarks.tools", processes=processes, threads=threads, env=env
        ).wait_ready(processes)
        self.ex = FlowExecutor(self.server.url, registry=registry)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far by the worker's process tree and by redis-server."""
        assert self.server.proc is not None
        return _cpu_seconds(os.getpgid(self.worker.proc.pid)), _pid_cpu(self.server.proc.pid)

    def close(self) -> None:
        self.worker.stop()
        self.ex.close()
        self.server.close()


def _counts(cl: Cluster, r: Any, steps: Any = None) -> list[int]:
    """Steps of `r` each worker process ran, busiest first (see benchmarks.spread)."""
    return spread.counts(
        (spread.process_of(x.worker) for x in spread.records(r, steps)), cl.processes
    )


def hop_latency_ms(cl: Cluster, n: int = 50, repeats: int = 7) -> dict[str, Any]:
    flow = flows.chain(n)
    cl.ex.run(flow, timeout=120)
    samples, per_process = [], []
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        samples.append((r.wall_time or 0) / n * 1000)
        per_process.append(_counts(cl, r))
    return {"hop_ms": statistics.median(samples), "per_process": per_process}


def fan_out(cl: Cluster, n: int = 1000, repeats: int = 3) -> dict[str, Any]:
    flow = flows.fan_out(n, join=True)
    cl.ex.run(flow, timeout=300)  # warm: every worker thread has its connection
    rates, waits, per_process = [], [], []
    cpu0 = cl.cpu_seconds()
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=300)
        assert r.status == "succeeded", r.error
        rates.append((n + 2) / (r.wall_time or 1))
        waits = [s.queue_wait for s in r.steps.values() if s.queue_wait is not None]
        per_process.append(_counts(cl, r))
    worker_s, redis_s = (b - a for a, b in zip(cpu0, cl.cpu_seconds(), strict=True))
    return {
        "steps_per_s": statistics.median(rates),
        "queue_wait_p50_ms": _percentile(waits, 50) * 1000,
        "queue_wait_p99_ms": _percentile(waits, 99) * 1000,
        "worker_cpu_us": worker_s / (repeats * (n + 2)) * 1e6,
        "redis_cpu_us": redis_s / (repeats * (n + 2)) * 1e6,
        "per_process": per_process,
    }


def efficiency(cl: Cluster, which: str, repeats: int = 3) -> dict[str, Any]:
    flow = flows.uneven() if which == "uneven" else flows.lattice(10)
    cl.ex.run(flow, timeout=120)  # warm
    samples, per_process = [], []
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        samples.append(r.critical_path_time / (r.wall_time or 1))
        per_process.append(_counts(cl, r))
    return {"ratio": statistics.median(samples), "per_process": per_process}


def io_wall_ratio(
    cl: Cluster, n: int = 500, seconds: float = 0.05, repeats: int = 3
) -> dict[str, Any]:
    """Wall time from the first leaf queued to the last finished, over one sleep."""
    flow = flows.io_fan(n, seconds, tool="counted_sleep")
    cl.ex.run(flow, timeout=120)  # warm: the threads a run spreads over have connections
    samples, per_process, peak = [], [], 0
    ids = [f"io{i}" for i in range(n)]
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        leaves = [r.steps[i] for i in ids]
        first = min(s.queued_at for s in leaves if s.queued_at)
        last = max(s.finished_at for s in leaves if s.finished_at)
        samples.append((last - first).total_seconds() / seconds)
        per_process.append(_counts(cl, r, ids))
        peak = max(peak, *(s.output[1] for s in leaves))
    return {"ratio": statistics.median(samples), "per_process": per_process, "peak": peak}


def timed_runs(cl: Cluster, flow: Any, work_steps: list[str], repeats: int) -> Measured:
    """Wall seconds from calling `run` to holding the result (as the peers are timed),
    after a warm-up run of the same flow; which process ran each of
    `work_steps` (a map's items), from its record, and how many steps that process was
    running when it started, as the step's tool counted (`benchmarks.work`)."""
    cl.ex.run(flow, timeout=300)  # warm: imports, connections, the threads' loops
    m = Measured(cl.processes)
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = cl.ex.run(flow, timeout=300)
        wall = time.perf_counter() - t0
        assert r.status == "succeeded", r.error
        recs = spread.records(r, work_steps)
        m.add(wall, [spread.process_of(x.worker) for x in recs], [x.output[1] for x in recs])
    return m


def cpu_fan(cl: Cluster, leaves: int, turns: int, repeats: int = 3) -> Measured:
    """One root, `leaves` CPU-bound steps of `turns` loop turns each."""
    ids = [f"cpu{i}" for i in range(leaves)]
    return timed_runs(cl, flows.cpu_fan(leaves, turns), ids, repeats)


def map_sleep(cl: Cluster, items: int, seconds: float, repeats: int = 3) -> Measured:
    """A map step of `items` sync sleeps (each item its own child record)."""
    return timed_runs(cl, flows.map_sleep(items, seconds), ["each"], repeats)


def sync_sleeps(cl: Cluster, n: int, seconds: float, repeats: int = 3) -> Measured:
    """One root, `n` leaves that each block a thread in `time.sleep(seconds)`."""
    flow = flows.io_fan(n, seconds, tool="counted_sleep_sync")
    return timed_runs(cl, flow, [f"io{i}" for i in range(n)], repeats)


def redis_memory_per_1000(cl: Cluster) -> float:
    """KiB of Redis memory that 1,000 finished no-op steps keep (until their TTL)."""
    client = redis.Redis.from_url(cl.server.url)
    before = int(client.info("memory")["used_memory"])
    r = cl.ex.run(flows.fan_out(999), timeout=300)
    assert r.status == "succeeded"
    after = int(client.info("memory")["used_memory"])
    return (after - before) / 1024


def _cpu_seconds(pgid: int) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp) after the ")"-split
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _pid_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(cl: Cluster, seconds: float = 10.0) -> float:
    """Percent of one core each idle worker process uses with an empty queue (the
    process tree's use, over its worker processes)."""
    time.sleep(1.0)
    pgid = os.getpgid(cl.worker.proc.pid)
    c0, t0 = _cpu_seconds(pgid), time.monotonic()
    time.sleep(seconds)
    return 100 * (_cpu_seconds(pgid) - c0) / (time.monotonic() - t0) / cl.processes
