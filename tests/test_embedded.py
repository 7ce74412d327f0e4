"""The embedded backend's shortcuts keep the contract.

It runs a step made ready by the one that just finished in that same task, keeps plain
records and epoch floats while a run goes on and builds the pydantic models at the end:
none of that may show in results, events, timeouts or live snapshots.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC
from typing import Any

import pytest

from executor import Flow, FlowExecutor, Step, ToolRegistry, tool

registry = ToolRegistry()


@tool(registry=registry)
async def instant(x: Any = None) -> int:
    """Returns without ever suspending: its task never gives the loop back by itself."""
    return 0


@tool(registry=registry)
async def nap(seconds: float, x: Any = None) -> float:
    await asyncio.sleep(seconds)
    return seconds


def chain(n: int, timeout: float | None = None) -> Flow:
    steps = [Step(id="s0", tool="instant")]
    steps += [
        Step(id=f"s{i}", tool="instant", inputs={"x": f"$steps.s{i - 1}"}) for i in range(1, n)
    ]
    return Flow(name="chain", steps=steps, timeout=timeout)


@pytest.fixture
def executor() -> Any:
    ex = FlowExecutor(registry=registry)
    yield ex
    ex.close()


def test_a_chain_of_instant_steps_still_honours_the_run_timeout(executor: FlowExecutor) -> None:
    # 10,000 steps take far longer than 10 ms, and none of them ever suspends: only if
    # the task running the chain lets the loop in now and then can the timeout fire.
    r = executor.run(chain(10_000, timeout=0.01), timeout=60)
    assert r.status == "timed_out"
    counts: dict[str, int] = {}
    for rec in r.steps.values():
        counts[rec.status] = counts.get(rec.status, 0) + 1
    assert counts.get("cancelled", 0) > 0
    assert set(counts) <= {"succeeded", "cancelled"}


def test_a_chain_runs_in_order_with_consistent_records(executor: FlowExecutor) -> None:
    r = executor.run(chain(300), timeout=60)
    assert r.status == "succeeded"
    recs = [r.steps[f"s{i}"] for i in range(300)]
    for before, after in itertools.pairwise(recs):
        assert before.finished_at is not None and after.queued_at is not None
        assert before.finished_at <= after.queued_at
    for rec in recs:
        assert rec.queued_at is not None and rec.started_at is not None
        assert rec.queued_at <= rec.started_at <= rec.finished_at  # type: ignore[operator]
        assert rec.started_at.tzinfo is UTC
        [attempt] = rec.attempts
        assert attempt.started_at == rec.started_at
        assert attempt.finished_at == rec.finished_at
        assert rec.duration is not None and rec.queue_wait is not None


def test_events_carry_the_records_instants(executor: FlowExecutor) -> None:
    flow = Flow(
        name="fan",
        steps=[
            Step(id="root", tool="instant"),
            *(
                Step(id=f"leaf{i}", tool="nap", inputs={"seconds": 0.01, "x": "$steps.root"})
                for i in range(20)
            ),
        ],
    )
    handle = executor.submit(flow)
    events = list(handle.events(timeout=30))
    r = handle.wait(timeout=30)
    assert r.status == "succeeded"
    assert events[-1].step_id is None and events[-1].at == r.finished_at
    for e in events[:-1]:
        rec = r.steps[e.step_id]  # type: ignore[index]
        assert e.at.tzinfo is UTC
        if e.status == "queued":
            assert e.at == rec.queued_at
        elif e.status == "running":
            assert e.at == rec.started_at and e.attempt == 1
        else:
            assert e.status == "succeeded" and rec.finished_at is not None
            assert e.at >= rec.finished_at


def test_a_live_snapshot_is_a_copy(executor: FlowExecutor) -> None:
    flow = Flow(
        name="live",
        steps=[
            Step(id="a", tool="instant"),
            Step(id="b", tool="nap", inputs={"seconds": 0.2, "x": "$steps.a"}),
        ],
    )
    handle = executor.submit(flow)
    for e in handle.events(timeout=30):
        if e.step_id == "b" and e.status == "running":
            break
    live = handle.result()
    assert live.steps["b"].status == "running" and live.steps["b"].finished_at is None
    final = handle.wait(timeout=30)
    assert final.steps["b"].status == "succeeded"
    # The snapshot taken earlier did not change under the caller's feet.
    assert live.steps["b"].status == "running" and live.steps["b"].finished_at is None
    assert live.steps["b"].attempts[0].finished_at is None
    assert handle.result() is final
