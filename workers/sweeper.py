"""The sweeper: a thread per worker process that finds what dead processes left behind."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from executor.backends.redis.coordinator import Coordinator, now_iso
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import RedisStore
from executor.errors import RunNotFoundError
from workers.periodic import Periodic

# Sends a step's attempt again: (run, step, attempt, delay in ms or None).
SendStep = Callable[[RunContext, str, int, int | None], None]

log = logging.getLogger("dagrelay.worker")


class Sweeper(Periodic):
    """Re-queues steps whose worker died (lease expired), repairs steps whose completer
    died, and stops overdue runs."""

    name = "dagrelay-sweeper"

    def __init__(
        self, store: RedisStore, coordinator: Coordinator, send_step: SendStep, period: float
    ) -> None:
        super().__init__(period)
        self.store = store
        self.coordinator = coordinator
        self.send_step = send_step

    def tick(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """One pass: expired leases and run deadlines."""
        store, coordinator = self.store, self.coordinator
        now = time.time()
        for run_id, step_id in store.expired_leases(now):
            if not store.take_lease_hint(run_id, step_id):
                continue  # another sweeper has it
            kind, attempt = store.reclaim(run_id, step_id, now_iso())
            if kind == 0:
                continue
            try:
                ctx = coordinator.context(run_id)
            except RunNotFoundError:
                continue
            if kind == 3:
                coordinator.repair(ctx, step_id)
            elif kind == 1:
                log.warning(
                    "run %s step %s: worker lost, sending attempt %s", run_id, step_id, attempt
                )
                self.send_step(ctx, step_id, attempt, None)
            else:
                coordinator.completed(
                    ctx,
                    step_id,
                    "cancelled",
                    record={
                        "error": {
                            "type": "WorkerLost",
                            "message": "worker lost while the run stopped",
                        }
                    },
                )
        for run_id in store.overdue_runs(now):
            store.client.zrem(store.deadlines_key, run_id)
            try:
                coordinator.stop(run_id, "timed_out")
            except RunNotFoundError:
                continue
