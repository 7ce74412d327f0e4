"""Trigger rules, `when` conditions and how skips and failures propagate."""

from __future__ import annotations

import pytest

from executor import Flow, Step

from .support import statuses

pytestmark = pytest.mark.timeout(60)


def branches() -> list[Step]:
    """ok (succeeds), bad (fails), maybe (skipped unless input.go)."""
    return [
        Step(id="ok", tool="echo", inputs={"value": "ok"}),
        Step(id="bad", tool="fail", inputs={"message": "nope"}),
        Step(id="maybe", tool="echo", inputs={"value": "maybe"}, when="input.go"),
    ]


def join(trigger: str, deps: list[str]) -> Step:
    return Step(
        id="join",
        tool="echo",
        inputs={"value": [f"$steps.{d}" for d in deps]},
        trigger=trigger,
    )


def run_join(backend, trigger: str, deps: list[str], go: bool = False):
    flow = Flow(
        name=f"trigger-{trigger}",
        steps=[*branches(), join(trigger, deps)],
        on_failure="continue",
    )
    return backend.run(flow, {"go": go})


# Trigger rules -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trigger", "deps", "go", "expected", "value"),
    [
        ("all_success", ["ok"], False, "succeeded", ["ok"]),
        ("all_success", ["ok", "maybe"], True, "succeeded", ["ok", "maybe"]),
        ("all_success", ["ok", "maybe"], False, "skipped", None),
        ("all_success", ["ok", "bad"], False, "upstream_failed", None),
        ("all_success", ["maybe", "bad"], False, "upstream_failed", None),
        ("none_failed", ["ok", "maybe"], False, "succeeded", ["ok", None]),
        ("none_failed", ["maybe"], False, "succeeded", [None]),
        ("none_failed", ["ok", "bad"], False, "upstream_failed", None),
        ("none_failed", ["maybe", "bad"], False, "upstream_failed", None),
        ("all_done", ["ok", "bad", "maybe"], False, "succeeded", ["ok", None, None]),
        ("all_done", ["bad"], False, "succeeded", [None]),
        ("all_done", ["ok", "maybe"], True, "succeeded", ["ok", "maybe"]),
    ],
)
def test_trigger_rules(backend, trigger, deps, go, expected, value):
    r = run_join(backend, trigger, deps, go)
    join_rec = r.steps["join"]
    assert join_rec.status == expected
    assert join_rec.output == value
    assert r.steps["bad"].status == "failed"
    assert r.steps["maybe"].status == ("succeeded" if go else "skipped")
    # A failed step fails the run, whatever ran after it.
    assert r.status == "failed"
    if expected != "succeeded":
        assert join_rec.started_at is None and join_rec.attempts == []


def test_all_done_cleanup_after_upstream_failed_chain(backend):
    flow = Flow(
        name="cleanup",
        steps=[
            Step(id="bad", tool="fail"),
            Step(id="after", tool="echo", inputs={"value": "$steps.bad"}),
            Step(
                id="cleanup",
                tool="echo",
                inputs={"value": "clean"},
                depends_on=["after"],
                trigger="all_done",
            ),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert statuses(r) == {"bad": "failed", "after": "upstream_failed", "cleanup": "succeeded"}
    assert r.steps["cleanup"].output == "clean"
    assert r.status == "failed"


# Conditions --------------------------------------------------------------------------
@pytest.mark.parametrize(("score", "expected"), [(0.9, "succeeded"), (0.1, "skipped")])
def test_when_on_step_output_and_input(backend, score, expected):
    flow = Flow(
        name="when",
        steps=[
            Step(id="check", tool="echo", inputs={"value": {"score": "$input.score"}}),
            Step(
                id="act",
                tool="echo",
                inputs={"value": "acted"},
                when="steps.check.score > 0.5 and input.mode == 'fast'",
            ),
        ],
        output="$steps.act",
    )
    r = backend.run(flow, {"score": score, "mode": "fast"})
    assert r.status == "succeeded"
    assert r.steps["act"].status == expected
    assert r.output == ("acted" if expected == "succeeded" else None)
    if expected == "skipped":
        assert r.steps["act"].attempts == []
        assert r.steps["act"].started_at is None


def test_when_with_len_in_and_not(backend):
    flow = Flow(
        name="when2",
        steps=[
            Step(id="xs", tool="echo", inputs={"value": ["a", "b", "c"]}),
            Step(
                id="yes",
                tool="echo",
                inputs={"value": 1},
                when="len(steps.xs) == 3 and 'b' in steps.xs and not input.off",
            ),
            Step(id="no", tool="echo", inputs={"value": 2}, when="'z' in steps.xs or input.off"),
        ],
    )
    r = backend.run(flow, {"off": False})
    assert statuses(r) == {"xs": "succeeded", "yes": "succeeded", "no": "skipped"}


def test_when_error_fails_the_step(backend):
    flow = Flow(
        name="when-error",
        steps=[
            Step(id="a", tool="echo", inputs={"value": {"x": 1}}),
            Step(id="b", tool="echo", inputs={"value": 1}, when="steps.a.missing > 0"),
            Step(id="c", tool="echo", inputs={"value": 2}, depends_on=["b"]),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert r.steps["b"].status == "failed"
    assert r.steps["b"].error is not None and r.steps["b"].error.type == "PredicateError"
    assert r.steps["c"].status == "upstream_failed"


def test_when_sees_none_for_a_step_that_did_not_succeed(backend):
    flow = Flow(
        name="when-none",
        steps=[
            Step(id="maybe", tool="echo", inputs={"value": 5}, when="input.go"),
            Step(
                id="fallback",
                tool="echo",
                inputs={"value": "fallback"},
                when="steps.maybe == None",
                trigger="none_failed",
            ),
        ],
    )
    r = backend.run(flow, {"go": False})
    assert statuses(r) == {"maybe": "skipped", "fallback": "succeeded"}
    r = backend.run(flow, {"go": True})
    assert statuses(r) == {"maybe": "succeeded", "fallback": "skipped"}


# Propagation -------------------------------------------------------------------------
def test_skip_propagates_down_all_success_chain(backend):
    flow = Flow(
        name="skip-chain",
        steps=[
            Step(id="gate", tool="echo", inputs={"value": 1}, when="input.go"),
            Step(id="s1", tool="echo", inputs={"value": "$steps.gate"}),
            Step(id="s2", tool="echo", inputs={"value": "$steps.s1"}),
            Step(id="join", tool="echo", inputs={"value": "$steps.s2"}, trigger="none_failed"),
            Step(id="other", tool="echo", inputs={"value": "independent"}),
        ],
        output={"join": "$steps.join", "other": "$steps.other"},
    )
    r = backend.run(flow, {"go": False})
    assert r.status == "succeeded"
    assert statuses(r) == {
        "gate": "skipped",
        "s1": "skipped",
        "s2": "skipped",
        "join": "succeeded",
        "other": "succeeded",
    }
    assert r.output == {"join": None, "other": "independent"}


def test_upstream_failed_propagates_and_branches_continue(backend):
    flow = Flow(
        name="uf-chain",
        steps=[
            Step(id="bad", tool="fail", inputs={"seconds": 0.01}),
            Step(id="u1", tool="echo", inputs={"value": "$steps.bad"}),
            Step(id="u2", tool="echo", inputs={"value": "$steps.u1"}),
            Step(id="u3", tool="echo", inputs={"value": "$steps.u2"}, trigger="none_failed"),
            Step(id="ok1", tool="sleep", inputs={"seconds": 0.1, "value": 1}),
            Step(id="ok2", tool="add", inputs={"a": "$steps.ok1", "b": 1}),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert statuses(r) == {
        "bad": "failed",
        "u1": "upstream_failed",
        "u2": "upstream_failed",
        "u3": "upstream_failed",
        "ok1": "succeeded",
        "ok2": "succeeded",
    }
    assert r.steps["ok2"].output == 2
    assert [s.step_id for s in r.failed_steps()] == ["bad"]
    assert "bad" in (r.error or "")
