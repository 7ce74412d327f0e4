"""The ExecutionResult: JSON round trip, timing, critical path, events, handles."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest

from executor import ExecutionResult, Flow, RetryPolicy, RunEvent, Step, StepRecord

from .support import gap

pytestmark = pytest.mark.timeout(60)
TERMINAL = {"succeeded", "failed", "skipped", "upstream_failed", "cancelled"}


def timed_flow() -> Flow:
    # a (0.05) -> b (0.2) -> d (0.05);  a -> c (0.05) -> d
    return Flow(
        name="timed",
        version="7",
        steps=[
            Step(id="a", tool="sleep", inputs={"seconds": 0.05, "value": 1}),
            Step(id="b", tool="sleep", inputs={"seconds": 0.2, "value": "$steps.a"}),
            Step(id="c", tool="sleep", inputs={"seconds": 0.05, "value": "$steps.a"}),
            Step(id="d", tool="add", inputs={"a": "$steps.b", "b": "$steps.c"}),
        ],
        output="$steps.d",
    )


def rich_flow(counter: str) -> Flow:
    """Something of everything: map items, retries with errors, skips, failures."""
    return Flow(
        name="rich",
        on_failure="continue",
        steps=[
            Step(id="p", tool="profile", inputs={"name": "x", "tags": ["t"]}),
            Step(id="m", tool="fail_if", map="$input.xs", inputs={"value": "$item", "bad": 2}),
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": counter, "fail_times": 1, "value": {"ok": [1.5, None]}},
                retry=RetryPolicy(max_attempts=2),
            ),
            Step(id="s", tool="echo", inputs={"value": 1}, when="input.go"),
            Step(id="after_m", tool="echo", inputs={"value": "$steps.m"}),
        ],
        output="$steps.p.orders",
    )


def test_timing_fields(backend):
    r = backend.run(timed_flow())
    assert r.status == "succeeded"
    assert r.output == 2
    assert r.flow_name == "timed" and r.flow_version == "7"
    assert r.submitted_at <= r.started_at <= r.finished_at
    for t in (r.submitted_at, r.started_at, r.finished_at):
        assert t.tzinfo is not None and t.utcoffset() == timedelta(0)
    assert r.wall_time == pytest.approx(gap(r.started_at, r.finished_at), abs=0.05)
    for sid, rec in r.steps.items():
        assert rec.status == "succeeded", sid
        assert rec.queue_wait is not None and rec.queue_wait >= 0
        assert rec.queued_at <= rec.started_at <= rec.finished_at
        assert r.started_at <= rec.queued_at
        assert rec.finished_at <= r.finished_at
        assert rec.duration >= 0
        assert rec.worker
        assert len(rec.attempts) == 1 and rec.attempts[0].worker
        assert rec.started_at.tzinfo is not None
    assert 0.05 * 0.9 <= r.steps["a"].duration < 0.05 + 0.15
    assert 0.2 * 0.9 <= r.steps["b"].duration < 0.2 + 0.15
    assert r.step_time == pytest.approx(sum(rec.duration for rec in r.steps.values()))
    assert r.critical_path == ["a", "b", "d"]
    assert r.critical_path_time == pytest.approx(sum(r.steps[s].duration for s in ("a", "b", "d")))
    assert r.critical_path_time <= r.wall_time
    assert r.parallelism == pytest.approx(r.step_time / r.wall_time)
    # b and c overlap; the run is about its critical path (0.3 s), not the sum (0.35 s).
    assert r.wall_time < 1.3 * r.critical_path_time


def test_skipped_and_cancelled_steps_have_no_run_timing(backend):
    flow = Flow(
        name="untimed",
        steps=[
            Step(id="gate", tool="echo", inputs={"value": 1}, when="input.go"),
            Step(id="bad", tool="fail", inputs={"seconds": 0.02}),
            Step(
                id="slow",
                tool="sleep",
                inputs={"seconds": 5},
                depends_on=["gate"],
                trigger="none_failed",
            ),
        ],
    )
    r = backend.run(flow, {"go": False})
    assert r.status == "failed"
    gate = r.steps["gate"]
    assert gate.status == "skipped"
    assert gate.started_at is None and gate.duration is None and gate.attempts == []
    slow = r.steps["slow"]
    assert slow.status == "cancelled"
    assert slow.duration is not None and slow.duration < 1
    assert slow.attempts[-1].error is not None  # the cancelled attempt says so
    assert r.critical_path  # never empty once something ran


def test_results_json_round_trip(backend, files):
    r = backend.run(rich_flow(files("counter")), {"xs": [1, 2, 3], "go": False})
    assert r.status == "failed"
    assert r.steps["m"].items and r.steps["f"].attempts[0].error
    text = r.model_dump_json()
    again = ExecutionResult.model_validate_json(text)
    assert again == r
    assert again.model_dump_json() == text
    assert again.succeeded is False
    assert isinstance(again.steps["m"].items[0], StepRecord)
    # Also through plain JSON-mode dicts.
    assert ExecutionResult.model_validate(r.model_dump(mode="json")) == r


def test_raise_for_status(backend):
    ok = backend.run(timed_flow())
    assert ok.raise_for_status() is ok
    assert ok.failed_steps() == []


def test_events_cover_every_step_and_end_with_the_run(backend, files):
    flow = rich_flow(files("counter"))
    handle = backend.submit(flow, {"xs": [1, 2, 3], "go": False})
    events = list(handle.events(timeout=10))
    r = handle.wait(timeout=10)
    assert all(isinstance(e, RunEvent) for e in events)
    assert {e.run_id for e in events} == {handle.run_id} == {r.run_id}
    last = events[-1]
    assert last.step_id is None
    assert last.status == r.status == "failed"
    assert [e for e in events if e.step_id is None] == [last]
    terminal = [e for e in events if e.step_id is not None and e.status in TERMINAL]
    # Exactly one terminal event per step, saying what the record says.
    assert sorted(e.step_id for e in terminal) == sorted(r.steps)
    for e in terminal:
        assert e.status == r.steps[e.step_id].status
    # Each step is queued, then running, then ends (events of one step are causal;
    # events of different steps may come from different workers).
    seen = [(e.step_id, e.status) for e in events]
    assert (
        seen.index(("p", "queued")) < seen.index(("p", "running")) < seen.index(("p", "succeeded"))
    )
    assert ("f", "retrying") in seen
    failed_f = next(e for e in events if e.step_id == "f" and e.status == "retrying")
    assert failed_f.attempt == 1 and failed_f.error
    # A second reader sees the same events from the start.
    assert list(handle.events(timeout=1)) == events


def test_get_run_reattaches(backend):
    handle = backend.submit(timed_flow())
    again = backend.get_run(handle.run_id)
    assert again.run_id == handle.run_id
    r = again.wait(timeout=10)
    assert r.status == "succeeded"
    assert r.output == 2
    assert again.result().status == "succeeded"
    assert handle.wait(timeout=10).run_id == r.run_id


def test_get_unknown_run(backend):
    from executor import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        backend.get_run("no-such-run")


def test_result_while_running(backend):
    flow = Flow(
        name="live",
        steps=[
            Step(id="a", tool="echo", inputs={"value": 1}),
            Step(id="b", tool="sleep", inputs={"seconds": 0.3}, depends_on=["a"]),
        ],
    )
    handle = backend.submit(flow)
    for e in handle.events(timeout=5):
        if e.step_id == "b" and e.status == "running":
            break
    live = handle.result()
    assert live.status in ("pending", "running")
    assert live.steps["a"].status == "succeeded"
    assert live.steps["b"].status == "running"
    assert handle.wait(timeout=5).status == "succeeded"


def test_arun_and_run_inside_a_running_loop(backend):
    async def main() -> tuple[ExecutionResult, ExecutionResult]:
        a = await backend.arun(timed_flow())
        b = backend.run(timed_flow())  # sync API from inside a loop must not deadlock
        return a, b

    a, b = asyncio.run(main())
    assert a.status == b.status == "succeeded"
    assert a.output == b.output == 2
    assert a.run_id != b.run_id


def test_started_at_is_utc_now(backend):
    from datetime import datetime

    before = datetime.now(UTC)
    r = backend.run(timed_flow())
    after = datetime.now(UTC)
    assert before <= r.started_at <= r.finished_at <= after
