"""How data flows: references, nested paths, literals, the flow output, validation."""

from __future__ import annotations

import pytest

from executor import Flow, FlowValidationError, Step

from .tools import read_lines

pytestmark = pytest.mark.timeout(60)


def profile_flow(output) -> Flow:
    return Flow(
        name="data",
        steps=[
            Step(
                id="p", tool="profile", inputs={"name": "$input.user.name", "tags": "$input.tags"}
            ),
            Step(
                id="refs",
                tool="echo",
                inputs={
                    "value": {
                        "second_order": "$steps.p.orders.1.name",
                        "last_tag": "$steps.p.tags.-1",
                        "qtys": ["$steps.p.orders.0.qty", "$steps.p.orders.2.qty"],
                        "literal": "$$steps.p",
                        "plain": "no ref",
                        "number": 3,
                        "nested": {"deep": ["$input.user", None, True]},
                    }
                },
            ),
        ],
        output=output,
    )


INPUT = {"user": {"name": "ada", "id": 7}, "tags": ["x", "y", "z"]}


def test_references_into_nested_outputs_and_list_indexes(backend):
    r = backend.run(profile_flow("$steps.refs"), INPUT)
    assert r.status == "succeeded"
    assert r.output == {
        "second_order": "ada-order1",
        "last_tag": "z",
        "qtys": [0, 2],
        "literal": "$steps.p",
        "plain": "no ref",
        "number": 3,
        "nested": {"deep": [{"name": "ada", "id": 7}, None, True]},
    }
    # Pydantic outputs are stored as JSON data.
    assert r.steps["p"].output == {
        "name": "ada",
        "tags": ["x", "y", "z"],
        "orders": [{"name": f"ada-order{i}", "qty": i} for i in range(3)],
    }
    # The record keeps the resolved inputs.
    assert r.steps["p"].inputs == {"name": "ada", "tags": ["x", "y", "z"]}
    assert r.steps["refs"].inputs["value"]["second_order"] == "ada-order1"


def test_flow_output_mapping(backend):
    output = {
        "name": "$steps.p.name",
        "order": "$steps.p.orders.1.name",
        "all": ["$steps.p.tags.0", "$input.user.id", "$$literal", 42],
    }
    r = backend.run(profile_flow(output), INPUT)
    assert r.status == "succeeded"
    assert r.output == {"name": "ada", "order": "ada-order1", "all": ["x", 7, "$literal", 42]}


def test_no_output_means_none(backend):
    r = backend.run(profile_flow(None), INPUT)
    assert r.status == "succeeded"
    assert r.output is None


def test_output_of_a_failed_run_is_none(backend):
    flow = Flow(name="o", steps=[Step(id="bad", tool="fail")], output="$steps.bad")
    r = backend.run(flow)
    assert r.status == "failed"
    assert r.output is None


def test_output_that_cannot_be_resolved_fails_the_run(backend):
    flow = Flow(
        name="bad-output",
        steps=[Step(id="a", tool="echo", inputs={"value": {"x": 1}})],
        output="$steps.a.missing",
    )
    handle = backend.submit(flow)
    r = handle.wait(timeout=10)
    assert r.status == "failed"
    assert r.steps["a"].status == "succeeded"
    assert "missing" in (r.error or "")
    # The handle and the run's final event agree with the result.
    assert handle.status() == "failed"
    assert list(handle.events(timeout=5))[-1].status == "failed"


def test_dollar_dollar_is_a_literal(backend):
    flow = Flow(
        name="lit",
        steps=[Step(id="a", tool="echo", inputs={"value": ["$$input.x", "$$$steps", "a$b"]})],
        output="$steps.a",
    )
    r = backend.run(flow, {"x": 1})
    assert r.output == ["$input.x", "$$steps", "a$b"]


def test_whole_input_reference(backend):
    flow = Flow(
        name="whole",
        steps=[Step(id="a", tool="echo", inputs={"value": "$input"})],
        output="$steps.a",
    )
    r = backend.run(flow, {"k": [1, {"v": None}]})
    assert r.output == {"k": [1, {"v": None}]}
    assert r.inputs == {"k": [1, {"v": None}]}


def test_reference_to_missing_key_at_run_time_fails_the_step(backend):
    flow = Flow(
        name="missing-key",
        steps=[
            Step(id="a", tool="echo", inputs={"value": {"x": 1}}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a.y"}),
        ],
    )
    r = backend.run(flow)
    assert r.steps["b"].status == "failed"
    assert "y" in r.steps["b"].error.message


def test_invalid_flow_raises_every_problem_before_anything_runs(backend, files):
    marker = files("marker")
    flow = Flow(
        name="invalid",
        steps=[
            Step(id="ok", tool="sleep", inputs={"marker": marker}),
            Step(id="bad_ref", tool="echo", inputs={"value": "$steps.nowhere"}),
            Step(id="bad_input", tool="add", inputs={"a": 1, "c": 2}),
            Step(id="bad_when", tool="echo", when="steps.ok.__class__"),
        ],
    )
    with pytest.raises(FlowValidationError) as info:
        backend.run(flow)
    text = "\n".join(info.value.problems)
    assert "nowhere" in text
    assert "'c'" in text and "'b'" in text  # unknown input c, missing input b
    assert "bad_when" in text
    assert len(info.value.problems) >= 4
    with pytest.raises(FlowValidationError):
        backend.submit(flow)
    assert read_lines(marker) == []


def test_unknown_tool_raises_up_front(backend):
    flow = Flow(name="unknown", steps=[Step(id="x", tool="no_such_tool")])
    with pytest.raises(FlowValidationError) as info:
        backend.run(flow)
    assert "no_such_tool" in str(info.value)


def test_cycle_raises_up_front(backend):
    flow = Flow(
        name="cycle",
        steps=[
            Step(id="a", tool="echo", inputs={"value": "$steps.b"}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a"}),
        ],
    )
    with pytest.raises(FlowValidationError) as info:
        backend.run(flow)
    assert "cycle" in str(info.value)


def test_missing_input_raises_up_front(backend):
    flow = Flow(name="needs", steps=[Step(id="a", tool="echo", inputs={"value": "$input.x.y"})])
    with pytest.raises(FlowValidationError) as info:
        backend.run(flow, {"x": {}})
    assert "input" in str(info.value)
