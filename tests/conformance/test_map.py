"""Map steps: one call per item, concurrently, outputs in item order."""

from __future__ import annotations

import pytest

from executor import Flow, Step

pytestmark = pytest.mark.timeout(60)


def test_map_outputs_in_item_order_and_child_records(backend):
    n, delay = 4, 0.05
    flow = Flow(
        name="map",
        steps=[
            Step(id="items", tool="make_items", inputs={"n": n, "delay": delay}),
            # Earlier items sleep longer, so they finish last: order must still hold.
            Step(
                id="each",
                tool="sleep",
                map="$steps.items",
                inputs={"seconds": "$item.delay", "value": "$item.name"},
            ),
            Step(id="after", tool="echo", inputs={"value": "$steps.each.0"}),
        ],
        output="$steps.each",
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == [f"item{i}" for i in range(n)]
    rec = r.steps["each"]
    assert rec.status == "succeeded"
    assert rec.output == r.output
    assert rec.items is not None and len(rec.items) == n
    for i, child in enumerate(rec.items):
        assert child.status == "succeeded"
        assert child.output == f"item{i}"
        assert child.inputs == {"seconds": delay * (n - i), "value": f"item{i}"}
        assert [a.number for a in child.attempts] == [1]
        assert child.started_at >= r.steps["items"].finished_at
        assert child.duration >= delay * (n - i) * 0.9
    # Items run concurrently: the step takes about its slowest item.
    assert rec.duration < 0.75 * sum(c.duration for c in rec.items)
    assert r.steps["after"].output == "item0"
    assert r.steps["after"].started_at >= rec.finished_at


def test_map_item_and_index_references(backend):
    flow = Flow(
        name="map-index",
        steps=[
            Step(
                id="each",
                tool="concat",
                map="$input.words",
                inputs={"parts": ["$index", ":", "$item", "$$item"]},
            )
        ],
        output="$steps.each",
    )
    r = backend.run(flow, {"words": ["a", "b", "c"]})
    assert r.status == "succeeded"
    assert r.output == ["0:a$item", "1:b$item", "2:c$item"]


def test_map_failing_item_fails_the_step(backend):
    flow = Flow(
        name="map-fail",
        steps=[
            Step(id="each", tool="fail_if", map="$input.xs", inputs={"value": "$item", "bad": 2}),
            Step(id="after", tool="echo", inputs={"value": "$steps.each"}),
        ],
        on_failure="continue",
    )
    r = backend.run(flow, {"xs": [1, 2, 3]})
    assert r.status == "failed"
    rec = r.steps["each"]
    assert rec.status == "failed"
    assert rec.output is None
    assert [c.status for c in rec.items] == ["succeeded", "failed", "succeeded"]
    assert rec.items[1].error.type == "ValueError"
    assert rec.items[0].output == 1
    assert rec.error is not None and "ValueError" in str(rec.error)
    assert r.steps["after"].status == "upstream_failed"


def test_map_over_empty_list(backend):
    flow = Flow(
        name="map-empty",
        steps=[
            Step(id="each", tool="add", map="$input.xs", inputs={"a": "$item", "b": 1}),
            Step(id="after", tool="total", inputs={"values": "$steps.each"}),
        ],
        output="$steps.after",
    )
    r = backend.run(flow, {"xs": []})
    assert r.status == "succeeded"
    assert r.steps["each"].output == []
    assert r.steps["each"].items == []
    assert r.output == 0


def test_map_over_a_non_list_fails_the_step(backend):
    flow = Flow(
        name="map-not-list",
        steps=[Step(id="each", tool="echo", map="$input.xs", inputs={"value": "$item"})],
    )
    r = backend.run(flow, {"xs": {"a": 1}})
    assert r.status == "failed"
    assert r.steps["each"].status == "failed"
    assert r.steps["each"].error is not None


def test_map_item_retries_are_per_item(backend, files):
    from executor import RetryPolicy

    counters = [files("c") for _ in range(3)]
    flow = Flow(
        name="map-retry",
        steps=[
            Step(
                id="each",
                tool="flaky",
                map="$input.counters",
                inputs={"counter": "$item", "fail_times": 1, "value": "$index"},
                retry=RetryPolicy(max_attempts=2),
            )
        ],
        output="$steps.each",
    )
    r = backend.run(flow, {"counters": counters})
    assert r.status == "succeeded"
    assert r.output == [0, 1, 2]
    assert [len(c.attempts) for c in r.steps["each"].items] == [2, 2, 2]


def test_map_step_with_false_when_is_skipped(backend):
    flow = Flow(
        name="map-when",
        steps=[
            Step(
                id="each", tool="echo", map="$input.xs", inputs={"value": "$item"}, when="input.go"
            ),
            Step(id="after", tool="echo", inputs={"value": "$steps.each"}),
        ],
    )
    r = backend.run(flow, {"xs": [1, 2], "go": False})
    assert r.steps["each"].status == "skipped"
    assert r.steps["after"].status == "skipped"
    r = backend.run(flow, {"xs": [1, 2], "go": True})
    assert r.steps["each"].output == [1, 2]
    assert r.steps["after"].output == [1, 2]


def test_a_map_step_has_one_attempt_and_its_items_their_own(backend):
    flow = Flow(
        name="map-attempts",
        steps=[Step(id="m", tool="echo", map="$input.xs", inputs={"value": "$item"})],
    )
    r = backend.run(flow, {"xs": [1, 2]})
    rec = r.steps["m"]
    assert r.status == "succeeded"
    assert [a.number for a in rec.attempts] == [1] and rec.attempts[0].error is None
    assert [len(i.attempts) for i in rec.items or []] == [1, 1]


def test_a_map_whose_list_cannot_be_read_has_no_items_and_one_failed_attempt(backend):
    flow = Flow(
        name="map-bad-source",
        steps=[Step(id="m", tool="echo", map="$input.xs", inputs={"value": "$item"})],
    )
    r = backend.run(flow, {"xs": "not a list"})
    rec = r.steps["m"]
    assert rec.status == "failed" and rec.items == []
    assert len(rec.attempts) == 1 and rec.attempts[0].error == rec.error
