"""Per-process watcher of running steps: renews leases, delivers cancels and timeouts.

One thread per worker process. While steps run it wakes often enough to renew their
leases (a third of the lease) and to notice that their run is stopping (fail-fast,
cancel, timeout), then cancels their task. With nothing running it only looks at its
(in-memory) set of steps once a tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from executor.backends.redis.store import RedisStore
from executor.errors import RunNotFoundError

log = logging.getLogger("dagrelay.worker")
STOP_CHECK_SECONDS = 0.25


@dataclass(eq=False)
class Tracked:
    """A step attempt running in this process."""

    run_id: str
    step_id: str
    attempt: int
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[object] | None = None
    reason: str | None = None
    slot: str | None = None  # holder name in the tool's semaphore, if it has a limit
    tool: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self, reason: str) -> None:
        """Stop the attempt: cancel its task on the worker thread's loop."""
        with self.lock:
            if self.reason is not None:
                return
            self.reason = reason
            if self.task is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)


class Monitor:
    """Renews leases of tracked attempts and cancels them when their run stops."""

    def __init__(self, store: RedisStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._tracked: set[Tracked] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_renew = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dagrelay-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def running(self) -> int:
        """How many attempts this process runs now."""
        return len(self._tracked)

    def track(
        self, run_id: str, step_id: str, attempt: int, slot: str | None = None, tool: str = ""
    ) -> Tracked:
        t = Tracked(run_id, step_id, attempt, slot=slot, tool=tool)
        # No wake-up: the monitor sees new steps on its next tick. Waking it per step
        # cost a thread switch and a stop check round trip per hop of a chain, for
        # steps that were just claimed (the claim checks the stop) and mostly end first.
        with self._lock:
            self._tracked.add(t)
        return t

    def untrack(self, t: Tracked) -> None:
        with self._lock:
            self._tracked.discard(t)

    def _loop(self) -> None:
        idle = True
        while not self._stopping.is_set():
            with self._lock:
                tracked = list(self._tracked)
            if not tracked:
                idle = True
                self._wake.wait(STOP_CHECK_SECONDS)
                self._wake.clear()
                continue
            now = time.monotonic()
            if idle:
                # Whatever is tracked now was claimed within a tick, with a fresh lease.
                idle = False
                self._next_renew = now + self.lease_seconds / 3 - STOP_CHECK_SECONDS
            try:
                self._check(tracked, now)
            except Exception:  # Redis hiccup: try again next tick, leases have slack
                log.exception("lease renewal failed")
            self._wake.wait(STOP_CHECK_SECONDS)
            self._wake.clear()

    def _check(self, tracked: list[Tracked], now: float) -> None:
        renew = now >= self._next_renew
        if renew:
            self._next_renew = now + self.lease_seconds / 3
        lease_ms = int(self.lease_seconds * 1000)
        expiry = time.time() + self.lease_seconds
        hints: dict[str, float] = {}
        slots: list[tuple[str, str]] = []
        stops: dict[str, str] = {}
        # One round trip renews every lease this process holds.
        renewed = (
            self.store.renew_many([(t.run_id, t.step_id, t.attempt) for t in tracked], lease_ms)
            if renew
            else []
        )
        for i, t in enumerate(tracked):
            if renew:
                held, stop = renewed[i]
                if held:
                    hints[f"{t.run_id}|{t.step_id}"] = expiry
                    if t.slot is not None:
                        slots.append((t.tool, t.slot))
            else:
                if t.run_id not in stops:
                    try:
                        stops[t.run_id] = self.store.run_meta(t.run_id, "stop").get("stop", "")
                    except RunNotFoundError:  # its state is gone (Redis emptied, expired)
                        stops[t.run_id] = "gone"
                stop = stops[t.run_id]
            if stop:
                t.interrupt("cancelled")
        self.store.set_leases(hints)
        if slots:
            self.store.renew_slots(slots, lease_ms)
