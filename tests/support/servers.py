"""A real `redis-server` on a free loopback port, and real `dagrelay worker` processes.

Tests never use a server someone left running: each fixture starts its own and stops it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """Path of redis-server; a clear error when missing (`make test` installs it)."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not installed: run `make test` (it installs Debian's "
            "redis-server when it can) or `apt-get install redis-server`"
        )
    return path


class RedisServer:
    """One redis-server process with its own port and directory."""

    def __init__(self, *, appendonly: bool = False, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dagrelay-redis-"))
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# Worker logs outlive their worker (tests read them after stopping it), not the tests.
_LOGS: list[Path] = []
atexit.register(lambda: [p.unlink(missing_ok=True) for p in _LOGS])


class WorkerProcess:
    """`dagrelay worker` in a subprocess, as a user would start it."""

    def __init__(
        self,
        redis_url: str,
        tools: str,
        *,
        processes: int = 1,
        threads: int = 8,
        queues: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="dagrelay-worker-", suffix=".log")[1])
        _LOGS.append(self.log_path)
        args = [
            sys.executable,
            "-m",
            "executor.cli",
            "worker",
            "--tools",
            tools,
            "--redis",
            redis_url,
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ]
        for q in queues:
            args += ["--queues", q]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, processes: int = 1, timeout: float = 30) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if text.count("is ready for action") >= processes:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_times(self, fragment: str) -> list[float]:
        """Epoch seconds of the log lines containing `fragment` (Dramatiq stamps each
        line `[YYYY-mm-dd HH:MM:SS,mmm]`, local time)."""
        out = []
        for line in self.log().splitlines():
            if fragment in line and line.startswith("["):
                stamp = line[1 : line.index("]")]
                out.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
        return out

    def signal(self, sig: int) -> None:
        """Signal the main process; Dramatiq forwards SIGTERM/SIGINT to its workers."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the whole process group (main process and workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a user would; returns once the worker processes have shut down.

        Dramatiq's supervisor outlives its workers by a second (its log watcher waits
        out a 1 s poll on the supervisor's own log pipe, which it never closes): once the
        workers are gone and their last lines are in the log, it is killed instead of
        waited for. Returns the supervisor's exit code (-9 when it was killed so).
        """
        workers = descendants(self.proc.pid) - {self.proc.pid}
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            while self.proc.poll() is None and time.monotonic() < deadline:
                if not any(_running(p) for p in workers):
                    try:
                        return self.proc.wait(0.1)
                    except subprocess.TimeoutExpired:
                        break
                time.sleep(0.01)
            self.kill_all()
            return self.proc.wait()
        finally:
            self._log.close()


def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (Dramatiq forks its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def worker_pid(worker: str | None) -> int:
    """The process id in a step's `worker` (`host:pid:thread`)."""
    assert worker, "the step records no worker"
    return int(worker.split(":")[1])


def python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a small Python script in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
