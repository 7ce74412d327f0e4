"""Per-process watcher of claimed units: renews their leases, delivers stops to them.

A stop reaches a running attempt within a round trip: stop.lua publishes it on the
store's stop channel and a listener thread here cancels the attempts of that run (but
those the stop spares). Every third of a lease another thread renews the leases of all
units this process holds, in one round trip; a renewal also answers whether the run's
stop catches the unit, which covers a stop published while the listener was
reconnecting, and whether the lease is still this attempt's (a unit taken over after
its lease expired is cancelled here: its result would not be recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field

import redis

from executor.backends.redis.store import RedisStore
from executor.errors import RunNotFoundError

log = logging.getLogger("dagrelay.worker")
LISTEN_TIMEOUT = 1.0


@dataclass(eq=False)
class Tracked:
    """A claimed unit of this process: its lease, and the task to cancel on a stop."""

    run_id: str
    unit: str
    attempt: int
    lane: str
    spared_on_fail: bool = False  # a fail-fast stop lets it run on
    slot: str | None = None  # holder name in the tool's semaphore, if it has a limit
    tool: str = ""
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[object] | None = None
    reason: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[object]) -> bool:
        """The task running the attempt; False if a stop came first (do not run it)."""
        with self.lock:
            self.loop, self.task = loop, task
            return self.reason is None

    def interrupt(self, reason: str) -> None:
        """Stop the attempt: cancel its task on the pipeline's loop."""
        with self.lock:
            if self.reason is not None:
                return
            self.reason = reason
            if self.task is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)

    def stopped_by(self, reason: str) -> bool:
        return not (reason == "failed" and self.spared_on_fail)


class Monitor:
    """Renews the leases of tracked units and cancels them when their run stops."""

    def __init__(self, store: RedisStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._tracked: dict[str, set[Tracked]] = {}  # by run
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, target in (
            ("dagrelay-leases", self._renew_loop),
            ("dagrelay-stops", self._listen),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        # The listener is not waited for: it may be blocked reading the channel for up to
        # LISTEN_TIMEOUT, and it only ever cancels attempts (none is left to cancel).
        self._stopping.set()
        for thread in self._threads:
            if thread.name != "dagrelay-stops":
                thread.join(timeout=5)

    def running(self) -> int:
        """How many units this process holds now."""
        with self._lock:
            return sum(len(s) for s in self._tracked.values())

    def held(self) -> list[Tracked]:
        """The units this process holds now (for its heartbeat)."""
        return self._all()

    def track(self, t: Tracked) -> Tracked:
        with self._lock:
            self._tracked.setdefault(t.run_id, set()).add(t)
        return t

    def untrack(self, t: Tracked) -> None:
        with self._lock:
            units = self._tracked.get(t.run_id)
            if units is not None:
                units.discard(t)
                if not units:
                    del self._tracked[t.run_id]

    def _of_run(self, run_id: str) -> list[Tracked]:
        with self._lock:
            return list(self._tracked.get(run_id, ()))

    def _all(self) -> list[Tracked]:
        with self._lock:
            return [t for units in self._tracked.values() for t in units]

    def stopped(self, run_id: str, reason: str) -> None:
        """The run stopped: cancel the attempts the stop catches."""
        for t in self._of_run(run_id):
            if t.stopped_by(reason):
                t.interrupt(reason)

    # The stop channel -------------------------------------------------------------------
    def _listen(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.store.stop_channel)
                # Stops published while this thread was not listening: ask the runs.
                self._check_stops()
                delay = 0.05
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_TIMEOUT)
                    if message and message.get("type") == "message":
                        run_id, _, reason = str(message["data"]).partition("|")
                        self.stopped(run_id, reason)
            except (redis.RedisError, OSError) as exc:
                log.warning("stop channel lost (%s); listening again", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection may fail
                    pubsub.close()

    def _check_stops(self) -> None:
        for run_id in {t.run_id for t in self._all()}:
            try:
                stop = self.store.run_meta(run_id, "stop").get("stop", "")
            except RunNotFoundError:  # its state is gone (Redis emptied, expired)
                stop = "gone"
            if stop:
                self.stopped(run_id, stop)

    # Leases -----------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        period = self.lease_seconds / 3
        while not self._stopping.wait(period):
            tracked = self._all()
            if not tracked:
                continue
            try:
                self._renew(tracked)
            except Exception:  # Redis hiccup: try again next period, leases have slack
                log.exception("lease renewal failed")

    def _renew(self, tracked: list[Tracked]) -> None:
        lease_ms = int(self.lease_seconds * 1000)
        renewed = self.store.renew_many(
            [(t.run_id, t.unit, t.attempt, t.lane) for t in tracked], lease_ms
        )
        slots: list[tuple[str, str]] = []
        for t, (held, stop) in zip(tracked, renewed, strict=True):
            if t.task is None and not held:
                continue  # claimed a moment ago and settled already: nothing to renew
            if held and t.slot is not None:
                slots.append((t.tool, t.slot))
            if stop:
                t.interrupt(stop)
            elif not held:
                t.interrupt("lost")  # taken over: its result would not be recorded
        if slots:
            self.store.renew_slots(slots, lease_ms)
