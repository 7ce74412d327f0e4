"""The sweeper: a thread per worker process that finds what dead processes left behind."""

from __future__ import annotations

import logging
import time

from executor.backends.redis.claims import Claim
from executor.backends.redis.coordinator import Coordinator, now_iso
from executor.backends.redis.messages import per_token
from executor.backends.redis.run_context import RunContext
from executor.errors import RunNotFoundError
from executor.run.scheduling import stop_error
from workers.periodic import Periodic

log = logging.getLogger("dagrelay.worker")


class Sweeper(Periodic):
    """Re-queues units whose worker died (lease expired), repairs steps whose completer
    died, and stops overdue runs."""

    name = "dagrelay-sweeper"

    def __init__(self, coordinator: Coordinator, period: float, lease_seconds: float) -> None:
        super().__init__(period)
        self.coordinator = coordinator
        self.store = coordinator.store
        self.lease_seconds = lease_seconds

    def tick(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """One pass: the runs whose leases are due for a look, and run deadlines."""
        store, coordinator = self.store, self.coordinator
        now = time.time()
        for run_id in store.leased_runs(now):
            try:
                self._sweep_run(run_id, now)
            except RunNotFoundError:
                store.watch_at(run_id, None)
        for run_id in store.overdue_runs(now):
            store.client.zrem(store.deadlines_key, run_id)
            try:
                coordinator.stop(run_id, "timed_out")
            except RunNotFoundError:
                continue

    def _sweep_run(self, run_id: str, now: float) -> None:
        """Re-queue a run's units whose lease expired (a dead worker's), repair what a
        dead completer left undecided, and say when to look again."""
        store, coordinator = self.store, self.coordinator
        expired, soonest = store.expired_leases(run_id, now)
        for unit, lane in expired:
            kind, attempt, tokens = store.reclaim(run_id, unit, lane, now_iso())
            if kind == 0:
                continue
            ctx = coordinator.context(run_id)
            if kind == 3:
                coordinator.repair(ctx, unit.partition("[")[0])
            elif kind == 1:
                log.warning(
                    "run %s unit %s: worker lost, queueing attempt %s", run_id, unit, attempt
                )
                coordinator.send_tokens(run_id, lane, tokens, 1)
            else:
                stop = store.run_meta(run_id, "stop").get("stop", "") or "cancelled"
                err = stop_error(stop).model_dump()
                coordinator.completed(ctx, unit, "cancelled", {"error": err})
        # Units due for over a lease with no taker: their token may be lost (a worker
        # that died with it fetched, say): another costs a worker a look at most.
        for lane, queued in store.stale_lanes(run_id, now - self.lease_seconds):
            store.add_token(run_id, lane)
            coordinator.send_tokens(run_id, lane, 1, per_token(queued))
        if expired:
            _, soonest = store.expired_leases(run_id, now)
        # Next look: when its earliest lease expires; with none left, within a lease
        # (a claim on its way now is watched from its own ZADD) or never once it ended.
        if soonest:
            store.watch_at(run_id, min(soonest, now + self.lease_seconds))
        elif store.run_meta(run_id, "status").get("status") in ("running", "pending"):
            store.watch_at(run_id, now + self.lease_seconds)
        else:
            store.watch_at(run_id, None)


def give_back(
    coordinator: Coordinator, ctx: RunContext, claim: Claim, lane: str, tool: str
) -> None:
    """A unit this stopping process claimed but will not start: queued again for others
    at once, its attempt unspent (on a Redis error, its lease brings it back instead)."""
    store = coordinator.store
    try:
        if claim.slot is not None:
            store.release_slot(tool, claim.slot)
        kind, tokens = store.give_back(ctx.run_id, claim.unit, claim.attempt, lane, now_iso())
        if kind == 1:
            coordinator.send_tokens(ctx.run_id, lane, tokens, 1)
        elif kind == 2:
            stop = store.run_meta(ctx.run_id, "stop").get("stop", "") or "cancelled"
            err = stop_error(stop).model_dump()
            coordinator.completed(ctx, claim.unit, "cancelled", {"error": err})
        log.info("run %s unit %s: given back, this worker is stopping", ctx.run_id, claim.unit)
    except Exception:
        log.exception(
            "run %s unit %s: not given back (its lease brings it back)", ctx.run_id, claim.unit
        )
