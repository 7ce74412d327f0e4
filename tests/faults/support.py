"""A disposable cluster for fault tests, and the helpers they share."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from executor import ExecutionResult, FlowExecutor
from tests import fault_tools
from tests.support.servers import ROOT, RedisServer, WorkerProcess, descendants

TOOLS = "tests.fault_tools"
#: Short leases so that a lost worker costs about two seconds, not the default ~7.
FAST = {
    "DAGRELAY_LEASE_SECONDS": "2",
    "DAGRELAY_SWEEP_SECONDS": "0.5",
    "DAGRELAY_HEARTBEAT_SECONDS": "2",
}
#: Upper bound for any single wait in these tests (a loaded 2-core CI machine is slow).
WAIT = 60.0
#: Measured recovery times, printed at the end of the session (see conftest).
MEASURED: dict[str, float] = {}


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def read_count(path: str | Path) -> int:
    try:
        return int(Path(path).read_text() or 0)
    except FileNotFoundError:
        return 0


def trace(path: str | Path) -> list[tuple[str, int, float]]:
    """The lines the `traced` tool wrote: (start|end, pid, time.time())."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        kind, pid, at = line.split()
        out.append((kind, int(pid), float(at)))
    return out


def one_final_record_each(result: ExecutionResult) -> None:
    """Every step ended once, in a terminal status, with numbered attempts 1..n."""
    for sid, rec in result.steps.items():
        assert rec.status in ("succeeded", "failed", "skipped", "upstream_failed", "cancelled"), (
            sid,
            rec.status,
        )
        numbers = [a.number for a in rec.attempts]
        assert numbers == list(range(1, len(numbers) + 1)), (sid, numbers)


def keys_without_ttl(client: redis.Redis) -> list[str]:
    """Keys of dagrelay runs (hash-tagged) that would live forever."""
    return [
        k
        for k in client.scan_iter(match="dagrelay:{*", count=1000)
        if client.ttl(k) == -1  # -2: gone meanwhile
    ]


class FaultCluster:
    """One redis-server (its own port and directory) and the workers a test starts.

    `close()` (the fixture calls it, also when the test fails) SIGKILLs every worker
    and stops the server: nothing outlives the test.
    """

    def __init__(self, *, appendonly: bool = True, password: str | None = None) -> None:
        self.server = RedisServer(appendonly=appendonly, password=password).start()
        self.workers: list[WorkerProcess] = []
        self._executors: list[FlowExecutor] = []
        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)

    @property
    def url(self) -> str:
        return self.server.url

    def start_workers(
        self,
        n: int = 1,
        *,
        threads: int = 2,
        processes: int = 1,
        queues: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> list[WorkerProcess]:
        """Start `n` worker processes (in parallel) and wait until they serve."""
        started = [
            WorkerProcess(
                self.url,
                TOOLS,
                threads=threads,
                processes=processes,
                queues=queues,
                env={**FAST, **(env or {})},
            )
            for _ in range(n)
        ]
        self.workers += started
        for w in started:
            w.wait_ready(processes, timeout=WAIT)
        return started

    def executor(self, **kwargs: Any) -> FlowExecutor:
        kwargs.setdefault("registry", fault_tools.registry)
        ex = FlowExecutor(self.url, **kwargs)
        self._executors.append(ex)
        return ex

    def worker_of(self, pid: int) -> WorkerProcess:
        """The started worker whose process tree holds `pid`."""
        for w in self.workers:
            if pid in descendants(w.proc.pid):
                return w
        raise AssertionError(f"pid {pid} belongs to no worker of this cluster")

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL a worker's whole process group and reap it."""
        worker.kill_all()
        worker.proc.wait(30)

    def stop_redis(self) -> None:
        self.server.stop()

    def start_redis(self) -> None:
        """Start the server again on the same port and directory (AOF reloads if on)."""
        self.server.start()

    def logs(self) -> str:
        return "\n".join(f"--- worker {w.proc.pid}\n{w.log()[-4000:]}" for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.kill_all()
        for w in self.workers:
            w.stop(timeout=10)
            w.log_path.unlink(missing_ok=True)
        for ex in self._executors:
            with contextlib.suppress(Exception):
                ex.close()
        self.client.close()
        self.server.close()


def in_parallel(*fns: Callable[[], Any]) -> None:
    threads = [threading.Thread(target=f) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """Start a small Python script in a fresh interpreter (stdout piped)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def measure(name: str, seconds: float) -> None:
    MEASURED[name] = round(seconds, 2)
    print(f"[faults] {name}: {seconds:.2f} s")
