"""Bundles: several ready steps of a run in one message, claimed together, run at once.

A fan-out makes many steps ready at the same moment. One message per step pays the
broker's fixed cost (fetch, decode, middleware, ack) and a claim round trip per step;
a bundle pays them once for up to `BUNDLE_MAX` steps (see `Coordinator.send`). Each
step of a bundle is still claimed, leased, run, recorded and coordinated on its own, so
every guarantee holds step by step: a step another worker holds is skipped, a duplicate
bundle runs nothing twice, a dead worker's steps come back through their leases.

The steps run concurrently on the worker thread's event loop (sync tools in the tool
threads), each recorded the moment it ends; the dependents its completion keeps in place
(see `StepRuntime._can_continue`) start right away on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from executor.backends.redis_store import Claim
from executor.coordinator import Keep, RunContext, now_iso
from workers.tracing import step_scope

if TYPE_CHECKING:
    from workers.runtime import StepRuntime

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
    kept = rt._loop().run_until_complete(_drive(rt, ctx, simple, attempt, inplace, keep))
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


async def _drive(
    rt: StepRuntime,
    ctx: RunContext,
    step_ids: list[str],
    attempt: int,
    inplace: bool,
    keep: Keep | None,
) -> list[str]:
    """Run steps as tasks of this thread's loop; each step a completion keeps starts at
    once, beside the others. Returns the kept steps that need the usual path."""
    running: set[asyncio.Task[list[str]]] = set()
    later: list[str] = []
    errors: list[BaseException] = []

    def start(ids: list[str], attempt: int, inplace: bool) -> None:
        ahead = rt._preclaimed()
        pre = {s: ahead.pop(s) for s in ids if s in ahead}  # claimed with their dependency
        for sid, claim in pre.items():
            running.add(asyncio.ensure_future(_run_step(rt, ctx, sid, claim, keep)))
        ids = [s for s in ids if s not in pre]
        if not ids:
            return
        claims = rt.store.claim_many(
            ctx.run_id,
            [(sid, attempt, secrets.token_hex(6), ctx.needs[sid]) for sid in ids],
            int(rt.settings.lease_seconds * 1000),
            now_iso(),
            rt.worker,
            inplace=inplace,
            drop_hints=rt._take_drops(),
        )
        for sid, claim in zip(ids, claims, strict=True):
            if claim.kind == "ok":
                running.add(asyncio.ensure_future(_run_step(rt, ctx, sid, claim, keep)))
            else:
                log.debug("run %s step %s: %s (%s)", ctx.run_id, sid, claim.kind, claim.detail)

    if step_ids:
        start(step_ids, attempt, inplace)
    while running:
        done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        kept: list[str] = []
        for task in done:
            if task.exception() is not None:  # Redis gone for longer than its retries
                errors.append(task.exception())  # type: ignore[arg-type]
            else:
                kept += task.result()
        later += [k for k in kept if not _simple(rt, ctx, k)]
        if simple := [k for k in kept if _simple(rt, ctx, k)]:
            start(simple, 1, True)
    if errors:  # the others were recorded first; these steps' leases bring them back
        raise errors[0]
    return later


async def _run_step(
    rt: StepRuntime,
    ctx: RunContext,
    step_id: str,
    claim: Claim,
    keep: Keep | None,
) -> list[str]:
    step = ctx.dag.steps[step_id]
    tool = rt.registry.get(step.tool)
    with step_scope(ctx.run_id, step_id, claim.attempt, rt.worker, step.tool):
        record, attempt_rec = rt._begin(step, claim)
        outcome = await rt._attempt_async(ctx, step, tool, claim, record, attempt_rec)
        # Recorded at once (a short blocking round trip on this loop): a dependent of
        # this step need not wait for the rest of the bundle.
        return rt._finish(ctx, step, tool, claim, record, attempt_rec, outcome, keep, True)
