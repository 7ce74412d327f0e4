"""Bundles: several ready steps of a run in one message, claimed together, run at once.

A fan-out makes many steps ready at the same moment. One message per step pays the
broker's fixed cost (fetch, decode, middleware, ack) and a claim round trip per step;
a bundle pays them once for up to `BUNDLE_MAX` steps (see `Coordinator.send`). Each
step of a bundle is still claimed, leased, run, recorded and coordinated on its own, so
every guarantee holds step by step: a step another worker holds is skipped, a duplicate
bundle runs nothing twice, a dead worker's steps come back through their leases.

The steps run concurrently on the worker thread's event loop (sync tools in the tool
threads), each recorded as it ends (those that end in the same turn of the loop, in one
round trip); the dependents its completion keeps in place (see
`StepRuntime._can_continue`) start right away on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from executor.backends.claims import Claim, new_token
from executor.coordinator import Keep, now_iso
from executor.run_context import RunContext
from workers.tracing import step_scope

if TYPE_CHECKING:
    from workers.runtime import Completing, StepRuntime

log = logging.getLogger("dagrelay.worker")


def run_bundle(
    rt: StepRuntime,
    ctx: RunContext,
    step_ids: list[str],
    attempt: int,
    inplace: bool,
    keep: Keep | None,
) -> None:
    """Claim, run and record the steps of a bundle, and what they unlock and keep."""
    simple = [s for s in step_ids if _simple(rt, ctx, s)]
    loop = rt._loop()
    kept = loop.run_until_complete(_Drive(rt, ctx, keep, loop).run(simple, attempt, inplace))
    # Steps that need a tool slot, map items or a missing tool take the usual path.
    for sid in step_ids:
        if sid not in simple:
            rt._continue(ctx, sid, keep, attempt, inplace)
    for sid in kept:
        rt._continue(ctx, sid, keep)


def _simple(rt: StepRuntime, ctx: RunContext, step_id: str) -> bool:
    step = ctx.dag.steps[step_id]
    tool = rt.registry.get(step.tool) if step.tool in rt.registry else None
    return tool is not None and tool.max_concurrency is None and step.map is None


class _Drive:
    """Steps of one run as tasks of this thread's loop. Each step a completion keeps
    starts at once beside the others; steps that end in the same turn of the loop are
    recorded together, in one round trip (group commit)."""

    def __init__(
        self, rt: StepRuntime, ctx: RunContext, keep: Keep | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.rt, self.ctx, self.keep, self.loop = rt, ctx, keep, loop
        self.running: set[asyncio.Task[list[str]]] = set()
        self.ending: list[tuple[Completing, asyncio.Future[list[str]]]] = []

    async def run(self, step_ids: list[str], attempt: int, inplace: bool) -> list[str]:
        """Returns the kept steps that need the usual path."""
        rt, ctx = self.rt, self.ctx
        later: list[str] = []
        errors: list[BaseException] = []
        if step_ids:
            self.start(step_ids, attempt, inplace)
        while self.running:
            done, self.running = await asyncio.wait(
                self.running, return_when=asyncio.FIRST_COMPLETED
            )
            kept: list[str] = []
            for task in done:
                if task.exception() is not None:  # Redis gone for longer than its retries
                    errors.append(task.exception())  # type: ignore[arg-type]
                else:
                    kept += task.result()
            later += [k for k in kept if not _simple(rt, ctx, k)]
            if simple := [k for k in kept if _simple(rt, ctx, k)]:
                self.start(simple, 1, True)
        if errors:  # the others were recorded first; these steps' leases bring them back
            raise errors[0]
        return later

    def start(self, ids: list[str], attempt: int, inplace: bool) -> None:
        rt, ctx = self.rt, self.ctx
        ahead = rt._preclaimed()
        pre = {s: ahead.pop(s) for s in ids if s in ahead}  # claimed with their dependency
        for sid, claim in pre.items():
            self.running.add(asyncio.ensure_future(self.step(sid, claim)))
        ids = [s for s in ids if s not in pre]
        if not ids:
            return
        claims = rt.store.claim_many(
            ctx.run_id,
            [(sid, attempt, new_token(), ctx.needs[sid]) for sid in ids],
            int(rt.settings.lease_seconds * 1000),
            now_iso(),
            rt.worker,
            inplace=inplace,
            drop_hints=rt._take_drops(),
        )
        for sid, claim in zip(ids, claims, strict=True):
            if claim.kind == "ok":
                self.running.add(asyncio.ensure_future(self.step(sid, claim)))
            else:
                log.debug("run %s step %s: %s (%s)", ctx.run_id, sid, claim.kind, claim.detail)

    async def step(self, step_id: str, claim: Claim) -> list[str]:
        rt, ctx = self.rt, self.ctx
        step = ctx.dag.steps[step_id]
        tool = rt.registry.get(step.tool)
        with step_scope(ctx.run_id, step_id, claim.attempt, rt.worker, step.tool):
            records = rt.attempts.begin(step, claim)
            outcome = await rt.attempts.run_async(ctx, step, tool, claim, records)
            item = rt._outcome(ctx, step, tool, claim, records, outcome, self.keep, True)
            if item is None:  # retried: sent again
                return []
            return await self.record(item)

    def record(self, item: Completing) -> asyncio.Future[list[str]]:
        """Record a step's end with the others that end in this turn of the loop."""
        future: asyncio.Future[list[str]] = self.loop.create_future()
        if not self.ending:
            self.loop.call_soon(self.flush)
        self.ending.append((item, future))
        return future

    def flush(self) -> None:
        batch, self.ending = self.ending, []
        try:
            kept = self.rt._complete(self.ctx, [item for item, _ in batch], self.keep)
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), k in zip(batch, kept, strict=True):
            future.set_result(k)
