"""The sweeper: a thread per worker process that finds what dead processes left behind."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from executor.backends.redis.coordinator import now_iso
from executor.errors import RunNotFoundError
from workers.periodic import Periodic

if TYPE_CHECKING:
    from workers.runtime import StepRuntime

log = logging.getLogger("dagrelay.worker")


class Sweeper(Periodic):
    """Re-queues steps whose worker died (lease expired), repairs steps whose completer
    died, and stops overdue runs."""

    name = "dagrelay-sweeper"

    def __init__(self, runtime: StepRuntime) -> None:
        super().__init__(runtime.settings.sweep_seconds)
        self.runtime = runtime

    def tick(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """One pass: expired leases and run deadlines."""
        rt = self.runtime
        store = rt.store
        now = time.time()
        for run_id, step_id in store.expired_leases(now):
            if not store.take_lease_hint(run_id, step_id):
                continue  # another sweeper has it
            kind, attempt = store.reclaim(run_id, step_id, now_iso())
            if kind == 0:
                continue
            try:
                ctx = rt.coordinator.context(run_id)
            except RunNotFoundError:
                continue
            if kind == 3:
                rt.coordinator.repair(ctx, step_id)
            elif kind == 1:
                log.warning(
                    "run %s step %s: worker lost, sending attempt %s", run_id, step_id, attempt
                )
                rt.send_step(ctx, step_id, attempt, None)
            else:
                rt.coordinator.completed(
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
                rt.coordinator.stop(run_id, "timed_out")
            except RunNotFoundError:
                continue
