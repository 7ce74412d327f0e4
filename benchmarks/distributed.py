"""Distributed figures, each beside its physical limit or its peer, in one run.

Starts its own redis-server on a free port and real worker processes, like the tests.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks import flows
from benchmarks.tools import registry
from executor import FlowExecutor
from tests.support.servers import ROOT, RedisServer, WorkerProcess


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def round_trips(url: str, n: int = 2000) -> dict[str, float]:
    """PING and EVALSHA p50 in milliseconds: the physical limit of one hop."""
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
    return out


class Cluster:
    """A redis-server plus one dagrelay worker process (processes × threads)."""

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


def hop_latency_ms(cl: Cluster, n: int = 50, repeats: int = 7) -> float:
    flow = flows.chain(n)
    cl.ex.run(flow, timeout=120)
    samples = []
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        samples.append((r.wall_time or 0) / n * 1000)
    return statistics.median(samples)


def fan_out(cl: Cluster, n: int = 1000, repeats: int = 3) -> dict[str, float]:
    flow = flows.fan_out(n, join=True)
    cl.ex.run(flow, timeout=300)  # warm: every worker thread has its connection
    rates, waits = [], []
    cpu0 = cl.cpu_seconds()
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=300)
        assert r.status == "succeeded", r.error
        rates.append((n + 2) / (r.wall_time or 1))
        waits = [s.queue_wait for s in r.steps.values() if s.queue_wait is not None]
    worker_s, redis_s = (b - a for a, b in zip(cpu0, cl.cpu_seconds(), strict=True))
    return {
        "steps_per_s": statistics.median(rates),
        "queue_wait_p50_ms": _percentile(waits, 50) * 1000,
        "queue_wait_p99_ms": _percentile(waits, 99) * 1000,
        "worker_cpu_us": worker_s / (repeats * (n + 2)) * 1e6,
        "redis_cpu_us": redis_s / (repeats * (n + 2)) * 1e6,
    }


def efficiency(cl: Cluster, which: str, repeats: int = 3) -> float:
    flow = flows.uneven() if which == "uneven" else flows.lattice(10)
    cl.ex.run(flow, timeout=120)  # warm
    samples = []
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        samples.append(r.critical_path_time / (r.wall_time or 1))
    return statistics.median(samples)


def io_wall_ratio(cl: Cluster, n: int = 500, seconds: float = 0.05, repeats: int = 3) -> float:
    """Wall time from the first leaf queued to the last finished, over one sleep."""
    flow = flows.io_fan(n, seconds)
    cl.ex.run(flow, timeout=120)  # warm: the threads a run spreads over have connections
    samples = []
    for _ in range(repeats):
        r = cl.ex.run(flow, timeout=120)
        assert r.status == "succeeded", r.error
        leaves = [r.steps[f"io{i}"] for i in range(n)]
        first = min(s.queued_at for s in leaves if s.queued_at)
        last = max(s.finished_at for s in leaves if s.finished_at)
        samples.append((last - first).total_seconds() / seconds)
    return statistics.median(samples)


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
    """Percent of one core the idle worker process tree uses with an empty queue."""
    time.sleep(1.0)
    pgid = os.getpgid(cl.worker.proc.pid)
    c0, t0 = _cpu_seconds(pgid), time.monotonic()
    time.sleep(seconds)
    return 100 * (_cpu_seconds(pgid) - c0) / (time.monotonic() - t0)


def raw_dramatiq(
    url: str, threads: int = 8, n_chain: int = 50, n_fan: int = 1000, repeats: int = 5
) -> dict[str, float]:
    """Raw Dramatiq on the same Redis with the same processes × threads."""
    env = {**os.environ, "BENCH_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    log_path = Path(tempfile.mkstemp(prefix="raw-dramatiq-", suffix=".log")[1])
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "benchmarks.raw_dramatiq",
            "--processes",
            "1",
            "--threads",
            str(threads),
            "--queues",
            "raw",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    os.environ["BENCH_REDIS_URL"] = url
    from benchmarks import raw_dramatiq as raw

    client = redis.Redis.from_url(url)
    try:
        _wait_ready(proc, log_path)
        hops = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            raw.pipeline(n_chain, f"chain{i}").run()
            client.blpop([f"raw:done:chain{i}"], timeout=60)
            if i:  # the first run warms up
                hops.append((time.perf_counter() - t0) / n_chain * 1000)
        rates = []
        for i in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n_fan):
                raw.raw_noop.send(f"each:fan{i}")
            for _ in range(n_fan):
                client.blpop([f"raw:done:fan{i}"], timeout=60)
            rates.append(n_fan / (time.perf_counter() - t0))
        return {"hop_ms": statistics.median(hops), "msgs_per_s": statistics.median(rates)}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()
        log_path.unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[Any], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "is ready for action" in log_path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"raw dramatiq worker exited: {log_path.read_text()}")
        time.sleep(0.05)
    raise RuntimeError("raw dramatiq worker not ready")
