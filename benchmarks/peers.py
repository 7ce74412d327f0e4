"""The peers, run in the same `make bench` on the same machine with the same shape.

* raw Dramatiq (`benchmarks.raw_dramatiq`): `dramatiq` worker processes, its defaults;
* Celery (`benchmarks.peer_celery`): `celery worker` processes, threads pool, Redis
  broker and result backend, its defaults;
* Dask distributed: a `LocalCluster` of worker processes (nannies), its defaults
  (work stealing on), the scheduler in this process as LocalCluster puts it.

Each is given the same processes × threads as the dagrelay cluster it is compared with,
runs the same functions (`benchmarks.work`) in the same DAG shape (one root, then its
leaves), and is timed the same way: from submitting to holding every result, in this
process, after one warm-up run. Only one system runs at a time: each is started, measured
and stopped before the next. Raw Dramatiq and Celery share one redis-server of the same
configuration as dagrelay's (started here, like the tests', flushed between uses).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks import work
from benchmarks.spread import Measured
from tests.support.servers import ROOT, RedisServer

_server: RedisServer | None = None


def redis_url() -> str:
    """The peers' redis-server: started on first use, stopped when the bench exits.

    One for the whole bench: the raw Dramatiq and Celery client modules bind their
    broker's URL when imported (BENCH_REDIS_URL).
    """
    global _server
    if _server is None:
        _server = RedisServer().start()
        atexit.register(_server.close)
        os.environ["BENCH_REDIS_URL"] = _server.url
    return _server.url


def _flush() -> None:
    redis.Redis.from_url(redis_url()).flushall()


def _arg(kind: str, arg: float) -> float:
    return int(arg) if kind == "burn" else arg


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_REDIS_URL": redis_url(), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM to the process group (the worker and whatever it forked), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


class RawDramatiq:
    """`dramatiq benchmarks.raw_dramatiq --processes P --threads T` on the peers' Redis."""

    def __init__(self, processes: int = 1, threads: int = 8) -> None:
        self.processes, self.threads = processes, threads
        _flush()
        self.log_path = Path(tempfile.mkstemp(prefix="raw-dramatiq-", suffix=".log")[1])
        self.proc = _spawn(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "benchmarks.raw_dramatiq",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--queues",
                "raw",
            ],
            self.log_path,
        )
        deadline = time.monotonic() + 30
        while self.log_path.read_text(errors="replace").count("is ready for action") < processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"raw dramatiq worker: {self.log_path.read_text()}")
            time.sleep(0.05)
        from benchmarks import raw_dramatiq as raw

        self.raw = raw
        self.client = redis.Redis.from_url(redis_url())

    def hop_and_fan(self, n_chain: int = 50, n_fan: int = 1000, repeats: int = 5) -> dict:
        """Per-hop latency of a `pipeline` of no-ops, and no-op messages a second."""
        raw, client = self.raw, self.client
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

    def fan(self, kind: str, arg: float, count: int, repeats: int) -> Measured:
        """A root actor that sends `count` leaves (`burn` turns or `sleep_sync` seconds)."""
        m = Measured(self.processes)
        for i in range(repeats + 1):
            tag = f"{kind}{i}"
            t0 = time.perf_counter()
            self.raw.raw_fan.send(tag, kind, arg, count)
            if self.client.blpop([f"raw:done:{tag}"], timeout=300) is None:
                raise RuntimeError(f"raw dramatiq: {kind} fan-out did not finish")
            wall = time.perf_counter() - t0
            pids = self.client.hgetall(f"raw:pids:{tag}")
            in_flight = [int(x) for x in self.client.lrange(f"raw:in_flight:{tag}", 0, -1)]
            if i:
                m.add(wall, [p for p, n in pids.items() for _ in range(int(n))], in_flight)
        return m

    def close(self) -> None:
        _stop(self.proc)
        self.log_path.unlink(missing_ok=True)


class CeleryWorkers:
    """`processes` × `celery worker --pool threads --concurrency threads` on Redis."""

    def __init__(self, processes: int, threads: int) -> None:
        self.processes, self.threads = processes, threads
        _flush()
        self.procs, self.logs = [], []
        for i in range(processes):
            log = Path(tempfile.mkstemp(prefix="celery-", suffix=".log")[1])
            self.logs.append(log)
            self.procs.append(
                _spawn(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "benchmarks.peer_celery",
                        "worker",
                        "--pool",
                        "threads",
                        "--concurrency",
                        str(threads),
                        "--hostname",
                        f"bench{i}@%h",
                        "--queues",
                        "bench",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "--loglevel",
                        "WARNING",
                    ],
                    log,
                )
            )
        client = redis.Redis.from_url(redis_url())
        deadline = time.monotonic() + 60
        while client.llen("bench:celery:ready") < processes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"celery worker: {self.logs[0].read_text()}")
            time.sleep(0.05)
        from benchmarks import peer_celery

        self.tasks = peer_celery

    def fan(self, kind: str, arg: float, count: int, repeats: int) -> Measured:
        """`chain(root, group(leaves))`: the root's worker sends the group when it ends."""
        from celery import chain, group

        task = self.tasks.burn if kind == "burn" else self.tasks.sleep_sync
        m = Measured(self.processes)
        for i in range(repeats + 1):
            a = _arg(kind, arg)
            t0 = time.perf_counter()
            res = chain(self.tasks.root.s(), group(task.s(a) for _ in range(count)))
            outputs = res.apply_async().get(timeout=300)
            wall = time.perf_counter() - t0
            if i:
                m.add_outputs(wall, outputs)
        return m

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            _stop(p)
        for log in self.logs:
            log.unlink(missing_ok=True)


class DaskCluster:
    """`LocalCluster(n_workers=processes, threads_per_worker=threads)` and its Client."""

    def __init__(self, processes: int, threads: int) -> None:
        from dask.distributed import Client, LocalCluster

        self.processes, self.threads = processes, threads
        self.cluster = LocalCluster(
            n_workers=processes,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
        self.client = Client(self.cluster)

    def fan(self, kind: str, arg: float, count: int, repeats: int) -> Measured:
        """One root task, then `count` leaf tasks that take its result (`client.map`:
        one message for all of them, Dask's own way, faster than a `submit` each)."""
        fn = work.burn if kind == "burn" else work.sleep_sync
        m = Measured(self.processes)
        for i in range(repeats + 1):
            a = _arg(kind, arg)
            t0 = time.perf_counter()
            root = self.client.submit(work.noop, pure=False)
            leaves = self.client.map(fn, [a] * count, [root] * count, pure=False)
            outputs = self.client.gather(leaves)
            wall = time.perf_counter() - t0
            if i:
                m.add_outputs(wall, outputs)
            del root, leaves
        return m

    def map_sleep(self, items: int, seconds: float, repeats: int) -> Measured:
        """`client.map` over a root's output: one task per item, like dagrelay's map."""
        m = Measured(self.processes)
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            root = self.client.submit(work.noop, pure=False)
            futs = self.client.map(work.sleep_sync, [seconds] * items, [root] * items, pure=False)
            outputs = self.client.gather(futs)
            wall = time.perf_counter() - t0
            if i:
                m.add_outputs(wall, outputs)
            del root, futs
        return m

    def close(self) -> None:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        self.client.close()
        self.cluster.close()


def dask_threaded_chain_us(n: int = 1000, repeats: int = 9) -> dict[str, float]:
    """Dask's threaded scheduler (`dask.threaded.get`) on a chain of `n` sync no-ops:
    µs a step for a prebuilt graph, and for `dask.delayed` built and computed each time."""
    import dask
    from dask.threaded import get

    dsk: dict[str, Any] = {"s0": (work.noop,)}
    for i in range(1, n):
        dsk[f"s{i}"] = (work.noop, f"s{i - 1}")
    last = f"s{n - 1}"

    def delayed_chain() -> None:
        x = dask.delayed(work.noop)()
        for _ in range(n - 1):
            x = dask.delayed(work.noop)(x)
        x.compute(scheduler="threads")

    out = {}
    for name, call in (("get_us", lambda: get(dsk, last)), ("delayed_us", delayed_chain)):
        call()  # warm: the pool's threads
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) / n * 1e6)
        out[name] = statistics.median(samples)
    return out
