"""Bundles: several ready steps of a run in one message, claimed together, run at once.

A fan-out makes many steps ready at the same moment. One message per step pays the
broker's fixed cost (fetch, decode, middleware, ack) and a claim round trip per step;
a bundle pays them once for up to `BUNDLE_MAX` steps (see `Coordinator.send`). Each
step of a bundle is still claimed, leased, run, recorded and coordinated on its own, so
every guarantee holds step by step: a step another worker holds is skipped, a duplicate
bundle runs nothing twice, a dead worker's steps come back through their leases.

The steps run concurrently on the worker thread's event loop (sync tools in the tool
threads), each recorded the moment it ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from executor.backends.redis_store import Claim
from executor.coordinator import RunContext, now_iso
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
    keep: Callable[[str], bool] | None,
) -> None:
    """Claim, run and record the steps of a bundle; continue with what they unlock."""
    while step_ids:
        simple = [s for s in step_ids if _simple(rt, ctx, s)]
        # Steps that need a tool slot, map items or a missing tool take the usual path.
        for sid in step_ids:
            if sid not in simple:
                rt._continue(ctx, sid, keep, attempt=attempt, inplace=inplace)
        if not simple:
            return
        claims = rt.store.claim_many(
            ctx.run_id,
            [(sid, attempt, secrets.token_hex(6), ctx.needs[sid]) for sid in simple],
            int(rt.settings.lease_seconds * 1000),
            now_iso(),
            rt.worker,
            inplace=inplace,
            drop_hints=rt._take_drops(),
        )
        claimed: list[tuple[str, Claim]] = []
        for sid, claim in zip(simple, claims, strict=True):
            if claim.kind == "ok":
                claimed.append((sid, claim))
            else:
                log.debug("run %s step %s: %s (%s)", ctx.run_id, sid, claim.kind, claim.detail)
        if not claimed:
            return
        kept = rt._loop().run_until_complete(_run_claimed(rt, ctx, claimed, keep))
        # What the bundle's completions unlocked and this worker keeps: claimed in place.
        step_ids, attempt, inplace = [k for k in kept if k is not None], 1, True


def _simple(rt: StepRuntime, ctx: RunContext, step_id: str) -> bool:
    step = ctx.dag.steps[step_id]
    tool = rt.registry.get(step.tool) if step.tool in rt.registry else None
    return tool is not None and tool.max_concurrency is None and step.map is None


async def _run_claimed(
    rt: StepRuntime,
    ctx: RunContext,
    claimed: list[tuple[str, Claim]],
    keep: Callable[[str], bool] | None,
) -> list[str | None]:
    return await asyncio.gather(*(_run_step(rt, ctx, sid, c, keep) for sid, c in claimed))


async def _run_step(
    rt: StepRuntime,
    ctx: RunContext,
    step_id: str,
    claim: Claim,
    keep: Callable[[str], bool] | None,
) -> str | None:
    step = ctx.dag.steps[step_id]
    tool = rt.registry.get(step.tool)
    with step_scope(ctx.run_id, step_id, claim.attempt, rt.worker, step.tool):
        record, attempt_rec = rt._begin(step, claim)
        outcome = await rt._attempt_async(ctx, step, tool, claim, record, attempt_rec)
        # Recorded at once (a short blocking round trip on this loop): a dependent of
        # this step need not wait for the rest of the bundle.
        return rt._finish(ctx, step, tool, claim, record, attempt_rec, outcome, keep)
