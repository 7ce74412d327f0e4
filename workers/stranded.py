"""Units no live worker can run: the worker that passes one over fails it after a wait.

A worker passes over queued units of tools it lacks (a worker that has the tool takes
them). When no live worker's heartbeat offers the unit's queue with its tool, the unit
would wait forever: after `no_worker_seconds` (cut short so that it comes before the
run's own timeout) it fails with "no live worker serves queue Q with tool T".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from executor.backends.redis.coordinator import Coordinator
from executor.backends.redis.heartbeats import WorkerBeat, live_workers, no_worker_message
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.backends.redis.unserved import fail_unit

log = logging.getLogger("dagrelay.worker")
BEATS_FOR = 1.0  # seconds the live workers read are reused
FORGET_AFTER = 600.0  # a unit not seen again for this long is forgotten


class Stranded:
    """Remembers when this process first passed each unit over; fails it once it has
    waited long enough with no live worker for it."""

    def __init__(self, store: RedisStore, coordinator: Coordinator, wait_seconds: float) -> None:
        self.store = store
        self.coordinator = coordinator
        self.wait_seconds = wait_seconds
        self.who = f"{socket.gethostname()}:{os.getpid()}:dagrelay"
        self._seen: dict[tuple[str, str], float] = {}
        self._beats: tuple[float, list[WorkerBeat]] = (-BEATS_FOR, [])
        self._lock = threading.Lock()

    def check(self, ctx: RunContext, lane: str, lacks: Callable[[str], bool]) -> None:
        """This process just passed over units of the lane for want of their tool: look
        at every due unit there of a step whose tool it lacks (`lacks(step_id)`)."""
        now = time.monotonic()
        due = self.store.client.zrangebyscore(
            self.store.todo_key(ctx.run_id, lane), "-inf", int(time.time() * 1000)
        )
        units = [u for u in map(str, due) if lacks(u.partition("[")[0])]
        if not units:
            return
        served = {(q, t) for w in self._live(now) for q in w.queues for t in w.tools}
        for unit in units:
            step = ctx.dag.steps[unit.partition("[")[0]]
            pair = (ctx.queue(step.id), step.tool)
            key = (ctx.run_id, unit)
            with self._lock:
                if pair in served:
                    self._seen.pop(key, None)
                    continue
                first = self._seen.setdefault(key, now)
            if now - first < self._wait(ctx.run_id):
                continue
            message = no_worker_message(*pair)
            if fail_unit(self.store, self.coordinator, ctx.run_id, unit, message, self.who):
                log.warning("run %s unit %s failed: %s", ctx.run_id, unit, message)
            with self._lock:
                self._seen.pop(key, None)
        self._forget(now)

    def _live(self, now: float) -> list[WorkerBeat]:
        at, beats = self._beats
        if now - at >= BEATS_FOR:
            beats = live_workers(self.store.client, self.store.namespace)
            self._beats = (now, beats)
        return beats

    def _wait(self, run_id: str) -> float:
        """The wait allowed, ending half a second before the run's deadline if it has one."""
        deadline = self.store.client.zscore(self.store.deadlines_key, run_id)
        if deadline is None:
            return self.wait_seconds
        return max(0.0, min(self.wait_seconds, float(deadline) - time.time() - 0.5))

    def _forget(self, now: float) -> None:
        with self._lock:
            for key in [k for k, t in self._seen.items() if now - t > FORGET_AFTER]:
                del self._seen[key]


__all__ = ["Stranded"]
