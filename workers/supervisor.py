"""`dagrelay worker`'s main process: checks Redis, starts worker processes, replaces the dead.

Dramatiq's own supervisor (`dramatiq workers`) shuts the whole node down when one worker
process dies (an OOM kill, say), and nothing brings it back. This one keeps its
processes: a process that dies is logged with its exit code and replaced (its units
come back through their leases, as after any crash); one that dies again and again
within a minute is restarted with a growing pause. Each process is Dramatiq's own
(`dramatiq.cli.worker_process`: threads, consumers, graceful stop), so everything else
behaves as under `dramatiq workers`.

Exit codes: 0 after a stop (SIGTERM or SIGINT; SIGHUP restarts the processes), 2 when
the worker can never work (Redis refused the password, a bad URL, a tools module that
does not import in a worker process), 1 when a process had to be killed on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any, TextIO

from dramatiq import cli as dramatiq_cli

from workers.checks import RedisMisconfigured, RedisWatch, wait_for_redis
from workers.restart import RESTART_EXIT, SUPERVISED_ENV, restart_requested

log = logging.getLogger("dagrelay.worker")
EXIT_MISCONFIGURED = 2
BANNER_ENV = "DAGRELAY_BANNER"  # what `dagrelay worker` prints once Redis answered
# Deaths of one process within this window make its next start wait, doubling from 1 s.
CRASH_WINDOW = 60.0
MAX_BACKOFF = 30.0


def boot() -> None:
    """The broker of a supervised worker process (Dramatiq's `broker` argument)."""
    from workers.broker import setup  # in the worker process only, after the fork

    setup()


def backoff(deaths: int) -> float:
    """Seconds before restarting a process that died `deaths` times within the window."""
    return 0.0 if deaths <= 1 else min(MAX_BACKOFF, 2.0 ** (deaths - 2))


def describe(code: int | None) -> str:
    """An exit code for people: `exit code 1`, `exit code -9 (SIGKILL)`."""
    if code is not None and code < 0:
        try:
            return f"exit code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


class LogRelay:
    """Copies the worker processes' log pipes to our stderr, whole writes at a time
    (Dramatiq's log watcher, but pipes come and go as processes are replaced)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._pipes: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dagrelay-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, pipe: Any) -> None:
        with self._lock:
            self._pipes.append(pipe)

    def stop(self, timeout: float = 2.0) -> None:
        """Copy what the pipes still hold (their processes are gone), then stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pipes:
                    break
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(timeout=1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pipes = list(self._pipes)
            if not pipes:
                self._stop.wait(0.05)
                continue
            ready: list[Any] = multiprocessing.connection.wait(pipes, timeout=0.2)
            for pipe in ready:
                try:
                    while pipe.poll():
                        self.out.write(pipe.recv_bytes().decode("utf-8", errors="replace"))
                    self.out.flush()
                except (EOFError, OSError):  # its process is gone and the pipe drained
                    pipe.close()
                    with self._lock:
                        self._pipes.remove(pipe)


@dataclass
class Child:
    """One worker process slot: the process in it now, and when it died lately."""

    index: int
    proc: BaseProcess | None = None
    due: float = 0.0  # when to start it (again)
    deaths: deque[float] = field(default_factory=deque)
    reload: bool = False  # stopped on purpose (SIGHUP): start again at once


def _child_main(args: Any, index: int, pipe: Any, canteen: Any, event: Any) -> None:
    # The fork inherited our log handler: Dramatiq's worker sets up its own (to the
    # pipe) only when the root logger has none.
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    dramatiq_cli.worker_process(args, index, pipe, canteen, event)
    if restart_requested():
        sys.exit(RESTART_EXIT)


class Supervisor:
    """Runs `processes` Dramatiq worker processes until told to stop."""

    def __init__(self, args: Any, redis_url: str) -> None:
        self.args = args
        self.redis_url = redis_url
        self.mp = multiprocessing.get_context("fork")
        self.children = [Child(i) for i in range(args.processes)]
        self.canteen = self.mp.Value(dramatiq_cli.Canteen)
        self.relay = LogRelay(sys.stderr)
        self.stopping = False
        self.code = 0
        self._signals: deque[int] = deque()

    def run(self) -> int:
        """Check Redis, start the processes, keep them; the exit code once stopped."""
        for sig in dramatiq_cli.HANDLED_SIGNALS:
            signal.signal(sig, lambda signum, _frame: self._signals.append(signum))
        try:
            if not wait_for_redis(self.redis_url, stop=self._stop_asked):
                return 0
        except RedisMisconfigured as exc:
            log.critical("%s", exc)
            return EXIT_MISCONFIGURED
        # The launcher's banner says the pool is starting: only once Redis answered.
        banner = os.environ.pop(BANNER_ENV, "")
        if banner:
            print(banner, flush=True)
        self.relay.start()
        watch = RedisWatch(self.redis_url)
        watch.start()
        try:
            self._loop()
        finally:
            watch.stop()
            self.relay.stop()
        return self.code

    def _stop_asked(self) -> bool:
        self._handle_signals()
        return self.stopping

    def _loop(self) -> None:
        while True:
            self._handle_signals()
            now = time.monotonic()
            for child in self.children:
                if child.proc is not None and child.proc.exitcode is not None:
                    self._reaped(child, now)
                if not self.stopping and child.proc is None and child.due <= now:
                    self._start(child)
            if self.stopping and all(c.proc is None for c in self.children):
                return
            sentinels = [c.proc.sentinel for c in self.children if c.proc is not None]
            if sentinels:
                multiprocessing.connection.wait(sentinels, timeout=0.2)
            else:
                time.sleep(0.2)

    def _start(self, child: Child) -> None:
        read, write = self.mp.Pipe(duplex=False)
        event = self.mp.Event()
        proc = self.mp.Process(
            target=_child_main,
            args=(self.args, child.index, dramatiq_cli.StreamablePipe(write), self.canteen, event),
            daemon=False,
        )
        # Blocked across the fork: the process takes our signals only once it has set up
        # its own handlers (Dramatiq's worker unblocks them then).
        dramatiq_cli.try_block_signals()
        try:
            proc.start()
        finally:
            dramatiq_cli.try_unblock_signals()
        write.close()
        self.relay.add(read)
        child.proc = proc

    def _reaped(self, child: Child, now: float) -> None:
        proc = child.proc
        assert proc is not None
        code, pid = proc.exitcode, proc.pid
        proc.join()
        child.proc = None
        if self.stopping:
            if code:
                self.code = self.code or (code if code > 0 else 1)
            return
        if child.reload:
            child.reload, child.due = False, now
            return
        if code == RESTART_EXIT:
            log.warning("worker process %d (PID %s) asked to be replaced", child.index, pid)
            child.due = now
            return
        if code == dramatiq_cli.RET_IMPORT:
            log.critical(
                "worker process %d (PID %s) could not import its modules (%s): stopping",
                child.index,
                pid,
                describe(code),
            )
            self.code = EXIT_MISCONFIGURED
            self._stop(signal.SIGTERM)
            return
        child.deaths.append(now)
        while child.deaths and child.deaths[0] < now - CRASH_WINDOW:
            child.deaths.popleft()
        pause = backoff(len(child.deaths))
        child.due = now + pause
        later = (
            f" in {pause:.0f} s (it died {len(child.deaths)} times within a minute)"
            if pause
            else ""
        )
        log.error(
            "worker process %d (PID %s) died with %s; starting another%s",
            child.index,
            pid,
            describe(code),
            later,
        )

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            if signum == getattr(signal, "SIGHUP", None) and not self.stopping:
                log.info("SIGHUP: restarting the worker processes")
                for child in self.children:
                    if child.proc is not None:
                        child.reload = True
                self._forward(signal.SIGTERM)
                continue
            if not self.stopping:
                log.info("stopping the worker processes (they finish what they run)")
            else:  # a second signal: Dramatiq's workers then exit at once
                log.warning("stopping the worker processes now")
            self._stop(signal.SIGTERM)

    def _stop(self, sig: signal.Signals) -> None:
        self.stopping = True
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(child.proc.pid, sig)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workers.supervisor` with `dramatiq workers`' arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not os.environ.get(SUPERVISED_ENV):  # importing `workers` may have built a broker
        env = {**os.environ, SUPERVISED_ENV: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "workers.supervisor", *argv], env)
    args = dramatiq_cli.make_argument_parser().parse_args(argv)
    args.broker = "workers.supervisor:boot"
    level = dramatiq_cli.VERBOSITY.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format=dramatiq_cli.LOGFORMAT, stream=sys.stderr)
    from workers.settings import Settings

    url = Settings.from_env().redis_url
    return Supervisor(args, url).run()


if __name__ == "__main__":
    sys.exit(main())
