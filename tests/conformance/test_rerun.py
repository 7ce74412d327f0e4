"""Rerunning a finished run in place: what failed runs again, successes are reused."""

from __future__ import annotations

import pytest

from executor import DagrelayError, ExecutionResult, Flow, FlowExecutor, RetryPolicy, Step

from . import tools
from .tools import read_lines

pytestmark = pytest.mark.timeout(60)

TWICE = RetryPolicy(max_attempts=2)


def numbers(result: ExecutionResult, sid: str) -> list[int]:
    return [a.number for a in result.steps[sid].attempts]


def chain(files, on_failure: str = "continue") -> tuple[Flow, str]:
    """a (marked each time it runs) -> b (fails its first 2 calls, 2 attempts a pass) -> c;
    d reads only a."""
    marker = files("a-ran")
    flow = Flow(
        name="rerun_chain",
        on_failure=on_failure,
        steps=[
            Step(id="a", tool="sleep", inputs={"value": 1, "marker": marker}),
            Step(
                id="b",
                tool="flaky",
                inputs={"counter": files("b"), "fail_times": 2, "value": 5},
                retry=TWICE,
            ),
            Step(id="c", tool="add", inputs={"a": "$steps.a", "b": "$steps.b"}),
            Step(id="d", tool="echo", inputs={"value": "$steps.a"}),
        ],
        output={"c": "$steps.c", "d": "$steps.d"},
    )
    return flow, marker


def test_a_rerun_runs_what_failed_again_and_reuses_what_succeeded(backend, files):
    flow, marker = chain(files)
    first = backend.run(flow)
    assert first.status == "failed"
    assert [first.steps[s].status for s in "abcd"] == [
        "succeeded",
        "failed",
        "upstream_failed",
        "succeeded",
    ]
    again = backend.executor.rerun(first.run_id, timeout=20)
    assert again.run_id == first.run_id
    assert again.status == "succeeded", again.error
    assert again.error is None
    assert again.output == {"c": 6, "d": 1}
    assert read_lines(marker) == ["started", "finished"]  # a ran once: its output was reused
    # Earlier attempts stay; this pass's go on from their numbers with a fresh budget.
    assert numbers(again, "b") == [1, 2, 3]
    assert again.steps["b"].attempts[0].error is not None
    assert again.steps["b"].error is None
    assert numbers(again, "a") == numbers(first, "a") == [1]
    assert again.steps["a"].started_at == first.steps["a"].started_at
    assert numbers(again, "c") == [1]
    assert again.started_at == first.started_at
    assert again.finished_at > first.finished_at
    # The run in Redis (or the executor) says the same as the rerun's result.
    assert backend.get_run(first.run_id).wait(10) == again


def test_a_fail_fast_rerun_runs_the_cancelled_steps_too(backend, files):
    flow, _ = chain(files, "fail_fast")
    first = backend.run(flow)
    assert first.status == "failed"
    assert first.steps["c"].status in ("cancelled", "upstream_failed")
    again = backend.executor.rerun(first.run_id, timeout=20)
    assert again.status == "succeeded", again.error
    assert {s: r.status for s, r in again.steps.items()} == dict.fromkeys("abcd", "succeeded")


def test_from_steps_reruns_a_succeeded_step_and_what_depends_on_it(backend, files):
    flow, marker = chain(files)
    done = backend.executor.rerun(backend.run(flow).run_id, timeout=20)
    assert done.status == "succeeded"
    with pytest.raises(DagrelayError, match="succeeded: nothing to rerun"):
        backend.executor.rerun(done.run_id)
    with pytest.raises(DagrelayError, match="no step 'zz' to rerun from"):
        backend.executor.rerun(done.run_id, from_steps=["zz"])
    again = backend.executor.rerun(done, flow, from_steps=["a"], timeout=20)
    assert again.status == "succeeded", again.error
    assert read_lines(marker).count("started") == 2
    assert numbers(again, "a") == [1, 2]
    assert numbers(again, "b") == [1, 2, 3]  # not downstream of a: reused
    assert numbers(again, "c") == numbers(again, "d") == [1, 2]  # downstream: run again


def test_a_map_runs_its_items_afresh(backend, files):
    counter = files("items")
    flow = Flow(
        name="rerun_map",
        steps=[
            Step(
                id="m",
                tool="flaky",
                map="$input.xs",
                inputs={"counter": counter, "fail_times": 1, "value": "$item"},
            )
        ],
        output="$steps.m",
    )
    first = backend.run(flow, {"xs": [1, 2, 3]})
    assert first.status == "failed"
    assert [i.status for i in first.steps["m"].items].count("failed") == 1
    again = backend.executor.rerun(first.run_id, timeout=20)
    assert again.status == "succeeded", again.error
    assert again.output == [1, 2, 3]
    assert numbers(again, "m") == [1, 2]  # the map's own attempt per pass
    assert [i.status for i in again.steps["m"].items] == ["succeeded"] * 3
    assert all(numbers_of(i) == [1] for i in again.steps["m"].items)


def numbers_of(record) -> list[int]:
    return [a.number for a in record.attempts]


def test_only_a_finished_run_can_be_rerun(backend, files):
    flow = Flow(name="slow", steps=[Step(id="s", tool="sleep", inputs={"seconds": 2})])
    handle = backend.submit(flow)
    try:
        with pytest.raises(DagrelayError, match="only a finished run can be rerun"):
            backend.executor.rerun(handle.run_id)
    finally:
        handle.cancel()
        handle.wait(10)


def test_a_saved_result_reruns_with_its_flow(backend, files):
    flow, marker = chain(files)
    saved = backend.run(flow).model_dump_json()
    previous = ExecutionResult.model_validate_json(saved)
    if backend.name == "local":
        # Another executor, as after a restart: the saved result and the flow are enough.
        with FlowExecutor(registry=tools.registry) as fresh:
            with pytest.raises(DagrelayError, match="give its flow"):
                fresh.rerun(previous)
            again = fresh.rerun(previous, flow, timeout=20)
    else:
        again = backend.executor.rerun(previous, timeout=20)
    assert again.status == "succeeded", again.error
    assert again.run_id == previous.run_id
    assert read_lines(marker).count("started") == 1


def test_the_timeline_shows_both_passes(backend, files):
    from executor.views.timeline.layout import build_timeline

    flow, _ = chain(files)
    first = backend.run(flow)
    again = backend.executor.rerun(first.run_id, timeout=20)
    timeline = build_timeline(again)
    bars = [
        b
        for g in timeline.groups
        for r in g.rows
        if r.step_id == "b"
        for b in r.bars
        if b.kind == "attempt"
    ]
    assert len(bars) == 3  # two failed attempts of the first pass, one of the rerun
    assert [b.status for b in sorted(bars, key=lambda b: b.start)] == [
        "failed",
        "failed",
        "succeeded",
    ]
    first_end = (first.finished_at - timeline.t0).total_seconds()
    assert sorted(b.start for b in bars)[2] >= first_end - 0.01  # the rerun's, after pass 1
