"""Shapes of DAGs: each step starts the moment its dependencies are done."""

from __future__ import annotations

import itertools

import pytest

from executor import Flow, Step

from .support import gap, intervals, wide_fan

pytestmark = pytest.mark.timeout(60)


def test_diamond(backend):
    flow = Flow(
        name="diamond",
        steps=[
            Step(id="a", tool="echo", inputs={"value": "$input.n"}),
            Step(id="b", tool="add", inputs={"a": "$steps.a", "b": 1}),
            Step(id="c", tool="add", inputs={"a": "$steps.a", "b": 10}),
            Step(id="d", tool="add", inputs={"a": "$steps.b", "b": "$steps.c"}),
        ],
        output="$steps.d",
    )
    result = backend.run(flow, {"n": 5})
    assert result.status == "succeeded"
    assert result.succeeded
    assert result.output == (5 + 1) + (5 + 10)
    assert {r.status for r in result.steps.values()} == {"succeeded"}
    d = result.steps["d"]
    for dep in ("b", "c"):
        assert d.started_at >= result.steps[dep].finished_at
    assert result.steps["d"].inputs == {"a": 6, "b": 15}


def test_uneven_dag_follows_dependencies_not_levels(backend):
    # A -> B (slow); A -> C -> D -> E (slow). Level by level, E would wait for B.
    slow, fast = 0.3, 0.02
    flow = Flow(
        name="uneven",
        steps=[
            Step(id="A", tool="sleep", inputs={"seconds": 0}),
            Step(id="B", tool="sleep", inputs={"seconds": slow}, depends_on=["A"]),
            Step(id="C", tool="sleep", inputs={"seconds": fast}, depends_on=["A"]),
            Step(id="D", tool="sleep", inputs={"seconds": fast}, depends_on=["C"]),
            Step(id="E", tool="sleep", inputs={"seconds": slow}, depends_on=["D"]),
        ],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    s = r.steps
    # E starts right after D, long before B (started with C) is done.
    assert s["E"].started_at < s["B"].finished_at
    assert gap(s["A"].finished_at, s["E"].started_at) < slow / 2
    # The run takes its critical path (A, C, D, E), not the sum of levels.
    assert r.critical_path == ["A", "C", "D", "E"] or r.critical_path == ["C", "D", "E"]
    assert r.critical_path_time == pytest.approx(slow + 2 * fast, rel=0.5)
    level_by_level = slow + fast + slow
    assert r.wall_time < 0.5 * (level_by_level + r.critical_path_time)
    assert r.wall_time / r.critical_path_time < 1.4


def test_fan_out_fan_in_runs_branches_concurrently(backend):
    n, t = 4, 0.2
    flow = Flow(
        name="fan",
        steps=[
            Step(id="root", tool="echo", inputs={"value": 1}),
            *[
                Step(id=f"w{i}", tool="sleep", inputs={"seconds": t, "value": "$steps.root"})
                for i in range(n)
            ],
            Step(
                id="join",
                tool="total",
                inputs={"values": [f"$steps.w{i}" for i in range(n)]},
            ),
        ],
        output="$steps.join",
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == n
    assert r.step_time >= n * t * 0.9
    assert r.wall_time < 0.5 * r.step_time
    assert r.parallelism > 2
    join = r.steps["join"]
    assert all(join.started_at >= r.steps[f"w{i}"].finished_at for i in range(n))


def test_depends_on_orders_without_data(backend):
    flow = Flow(
        name="order",
        steps=[
            Step(id="first", tool="sleep", inputs={"seconds": 0.05, "value": 1}),
            Step(id="second", tool="echo", inputs={"value": 2}, depends_on=["first"]),
        ],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.steps["second"].started_at >= r.steps["first"].finished_at


def test_sync_tools_run_in_threads_in_parallel(backend):
    t = 0.2
    flow = Flow(
        name="sync",
        steps=[
            Step(id="a", tool="sync_sleep", inputs={"seconds": t, "value": "a"}),
            Step(id="b", tool="sync_sleep", inputs={"seconds": t, "value": "b"}),
            # An async step alongside: the event loop must not be blocked by the threads.
            Step(id="c", tool="sleep", inputs={"seconds": 0.01, "value": "c"}),
        ],
        output=["$steps.a", "$steps.b", "$steps.c"],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == ["a", "b", "c"]
    assert r.wall_time < 0.75 * (2 * t)
    assert r.steps["c"].duration < t / 2


def test_tool_max_concurrency_one_runs_serially(backend):
    n, t = 3, 0.08
    flow = Flow(
        name="serial",
        steps=[
            Step(id=f"x{i}", tool="exclusive", inputs={"seconds": t, "value": i}) for i in range(n)
        ],
        output=[f"$steps.x{i}" for i in range(n)],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == list(range(n))
    spans = intervals([r.steps[f"x{i}"] for i in range(n)])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two calls of a max_concurrency=1 tool overlapped"
    assert r.wall_time >= n * t * 0.9
    # Waiting for the slot is queue time, not run time.
    assert max(r.steps[f"x{i}"].queue_wait for i in range(n)) >= (n - 1) * t * 0.8


def test_many_independent_roots(backend):
    n = 30
    flow = Flow(
        name="wide",
        steps=[Step(id=f"s{i}", tool="add", inputs={"a": i, "b": 1}) for i in range(n)],
        output=[f"$steps.s{i}" for i in range(n)],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == [i + 1 for i in range(n)]


def test_long_chain(backend):
    n = 40
    steps = [Step(id="s0", tool="add", inputs={"a": 0, "b": 1})]
    steps += [
        Step(id=f"s{i}", tool="add", inputs={"a": f"$steps.s{i - 1}", "b": 1}) for i in range(1, n)
    ]
    r = backend.run(Flow(name="chain", steps=steps, output=f"$steps.s{n - 1}"))
    assert r.status == "succeeded"
    assert r.output == n


def test_a_wide_fan_out_runs_every_leaf_once_with_its_own_record(backend):
    """Wide enough that the Redis backends send leaves in bundles (several per message)."""
    n = 300
    r = backend.run(wide_fan(n, Step(id="w", tool="echo")), timeout=60)
    assert r.status == "succeeded"
    assert r.output == sum(range(n))
    assert len(r.steps) == n + 2
    for i in range(n):
        rec = r.steps[f"w{i}"]
        assert rec.status == "succeeded" and rec.output == i
        assert [a.number for a in rec.attempts] == [1]
        assert rec.started_at >= r.steps["root"].finished_at
        assert rec.queue_wait is not None and rec.queue_wait >= 0
    assert r.steps["join"].started_at >= max(r.steps[f"w{i}"].finished_at for i in range(n))


def test_leaves_of_a_wide_fan_out_run_concurrently(backend):
    """Sleeping leaves overlap, bundled or not: far below one after the other."""
    n, t = 128, 0.1
    r = backend.run(wide_fan(n, Step(id="w", tool="sleep", inputs={"seconds": t})), timeout=60)
    assert r.status == "succeeded"
    assert r.output == sum(range(n))
    leaves = [r.steps[f"w{i}"] for i in range(n)]
    assert all(rec.duration is not None and rec.duration >= t * 0.9 for rec in leaves)
    # One after the other: 12.8 s. (Generous: fakeredis runs its Lua in Python.)
    assert gap(r.steps["root"].finished_at, r.steps["join"].started_at) < n * t / 4


def test_fail_fast_in_a_wide_fan_out_stops_the_other_leaves(backend):
    n = 200
    flow = wide_fan(n, Step(id="w", tool="fail_if", inputs={"bad": 7}))
    r = backend.run(flow, timeout=60)
    assert r.status == "failed"
    assert r.steps["w7"].status == "failed"
    assert r.steps["w7"].error is not None and "bad value 7" in r.steps["w7"].error.message
    assert r.steps["join"].status in ("cancelled", "upstream_failed")
    others = {r.steps[f"w{i}"].status for i in range(n) if i != 7}
    assert others <= {"succeeded", "cancelled"}
