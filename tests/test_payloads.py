"""Bad payloads, embedded and on a real worker: inputs that do not fit, outputs that are
not JSON or too large, deep nesting, unicode and NUL. Each gives a clear error (up front,
or as the step's error) and nothing else breaks: the worker goes on, Redis is not filled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from executor import Flow, FlowExecutor, FlowValidationError, Step
from executor.model.tools import DEFAULT_MAX_OUTPUT_BYTES
from tests import fault_tools
from tests.faults.support import FaultCluster

pytestmark = pytest.mark.timeout(120)
WAIT = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[FaultCluster]:
    """A server and one worker with the default output limit (1 MiB)."""
    c = FaultCluster(appendonly=False)
    try:
        c.start_workers(1, threads=4)
        yield c
    finally:
        c.close()


@pytest.fixture(params=["embedded", "redis"])
def ex(request, cluster: FaultCluster) -> Iterator[FlowExecutor]:
    """The same checks on both modes (embedded with the workers' default limit)."""
    if request.param == "embedded":
        executor = FlowExecutor(
            registry=fault_tools.registry, max_output_bytes=DEFAULT_MAX_OUTPUT_BYTES
        )
    else:
        executor = FlowExecutor(cluster.url, registry=fault_tools.registry)
    with executor:
        yield executor


def one(tool: str, inputs: dict[str, Any] | None = None, **step: Any) -> Flow:
    return Flow(
        name=f"one-{tool}",
        steps=[Step(id="a", tool=tool, inputs=inputs or {}, **step)],
        output="$steps.a",
    )


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": [value, i]} if i % 2 else [value]
    return value


def echo_input() -> Flow:
    return one("echo", {"value": "$input.v"})


# Inputs that do not fit --------------------------------------------------------------
@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({}, "input: step 'a' needs"),
        ({"w": 1}, "input: step 'a' needs"),
        ([1, 2], "input must be a mapping"),
        ("text", "input must be a mapping"),
        ({"v": object()}, "not JSON-compatible"),
        ({"v": b"\xff\xfe"}, "not JSON-compatible"),
        ({"v": "\ud800"}, "not JSON-compatible"),  # a lone surrogate is not text
        ({"v": nested(70)}, "deeper than 64"),
    ],
    ids=["missing", "other-key", "list", "string", "object", "bytes", "surrogate", "deep"],
)
def test_inputs_that_do_not_fit_the_flow_are_refused_before_anything_runs(ex, inputs, fragment):
    with pytest.raises(FlowValidationError) as info:
        ex.submit(echo_input(), inputs)
    assert fragment in str(info.value)


def test_an_input_of_the_wrong_type_fails_its_step_naming_the_field(ex):
    result = ex.run(one("add", {"a": "$input.a", "b": 1}), {"a": "not a number"}, timeout=WAIT)
    assert result.status == "failed"
    err = result.steps["a"].error
    assert err is not None and err.type.endswith("StepInputError")
    assert "inputs of tool 'add'" in err.message and "a:" in err.message


def test_a_reference_that_walks_off_the_data_is_a_clear_step_error(ex):
    flow = Flow(
        name="walk-off",
        steps=[
            Step(id="a", tool="echo", inputs={"value": {"x": [1]}}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a.x.5"}),
        ],
    )
    result = ex.run(flow, timeout=WAIT)
    assert result.status == "failed"
    err = result.steps["b"].error
    assert err is not None and "$steps.a.x.5" in err.message and "index 5" in err.message


# Outputs that are not JSON -----------------------------------------------------------
@pytest.mark.parametrize(
    "tool, inputs, fragment",
    [
        ("opaque", {}, "Unable to serialize unknown type"),
        ("raw_bytes", {}, "invalid utf-8"),
        ("self_loop", {}, "Circular reference"),
        ("nested", {"depth": 5000}, "Maximum serialization depth"),
        ("bad_output", {}, "output of tool 'bad_output'"),
    ],
)
def test_an_output_that_is_not_json_fails_the_step_and_the_worker_goes_on(
    ex, tool, inputs, fragment
):
    result = ex.run(one(tool, inputs), timeout=WAIT)
    assert result.status == "failed"
    err = result.steps["a"].error
    assert err is not None and err.type.endswith("ToolOutputError"), err
    assert fragment in err.message
    assert ex.run(one("add", {"a": 1, "b": 1}), timeout=WAIT).output == 2


# Outputs over the limit ------------------------------------------------------------------
def test_an_output_over_the_limit_fails_the_step_with_sizes_named(ex):
    n = DEFAULT_MAX_OUTPUT_BYTES  # its JSON has two quotes more: just over
    result = ex.run(one("big_text", {"n": n}), timeout=WAIT)
    assert result.status == "failed"
    err = result.steps["a"].error
    assert err is not None and err.type.endswith("ToolOutputError")
    assert f"{n + 2:,} bytes of JSON" in err.message
    assert f"limit of {DEFAULT_MAX_OUTPUT_BYTES:,} bytes" in err.message
    assert result.steps["a"].output is None and result.output is None
    assert result.steps["a"].attempts[-1].error == err
    just_under = ex.run(one("big_text", {"n": n - 2}), timeout=WAIT)
    assert just_under.status == "succeeded" and len(just_under.output) == n - 2


def test_a_map_step_over_the_limit_keeps_no_item_outputs(ex):
    flow = Flow(
        name="big-map",
        steps=[
            Step(id="items", tool="echo", inputs={"value": [1, 2, 3, 4, 5]}),
            Step(
                id="m",
                tool="big_text",
                map="$steps.items",
                inputs={"n": DEFAULT_MAX_OUTPUT_BYTES // 4},
            ),
        ],
    )
    result = ex.run(flow, timeout=WAIT)
    m = result.steps["m"]
    assert result.status == "failed" and m.status == "failed"
    assert m.error is not None and "over the limit" in m.error.message
    assert m.output is None
    assert m.items and all(item.output is None for item in m.items)


def test_redis_is_not_filled_by_an_output_over_the_limit(cluster):
    with FlowExecutor(cluster.url, registry=fault_tools.registry) as client:
        before = int(cluster.client.info("memory")["used_memory"])
        result = client.run(one("big_text", {"n": 8 * DEFAULT_MAX_OUTPUT_BYTES}), timeout=WAIT)
    assert result.status == "failed"
    sizes = {
        k: int(cluster.client.memory_usage(k) or 0)
        for k in cluster.client.scan_iter(match=f"dagrelay:{{{result.run_id}}}:*")
    }
    assert sizes and max(sizes.values()) < 64 * 1024, sizes
    grown = int(cluster.client.info("memory")["used_memory"]) - before
    assert grown < DEFAULT_MAX_OUTPUT_BYTES, grown


def test_embedded_has_no_output_limit_unless_asked(cluster):
    with FlowExecutor(registry=fault_tools.registry) as plain:
        big = plain.run(one("big_text", {"n": 2 * DEFAULT_MAX_OUTPUT_BYTES}), timeout=WAIT)
    assert big.status == "succeeded"
    with FlowExecutor(registry=fault_tools.registry, max_output_bytes=100) as small:
        refused = small.run(one("big_text", {"n": 99}), timeout=WAIT)
    assert refused.status == "failed" and "limit of 100 bytes" in str(refused.error)


# Deep data, unicode, NUL -----------------------------------------------------------------
AWKWARD = [
    "\x00",
    "a\x00b\x00",
    "é ü ß ø",
    "日本語テキスト",
    "emoji 🎉🧪👩‍👩‍👧",
    "rtl \u202eevil\u202c",
    "zero\u200bwidth",
    "\ufeffbom",
    "line\nbreak\r\n\ttab",
    '"quotes" \\ backslash',
    "$input.not_a_reference_inside_data",
    "{hash}:{tag}",
    "x" * 10_000,
    {"k\x00": "v", "ключ": "значение", "": "empty key", "$steps.x": 1},
    nested(40),  # 60 levels deep (input limit: 64)
    [None, True, False, 0, -1, 1.5, 10**30, "", [], {}],
]


@pytest.mark.parametrize("value", AWKWARD, ids=range(len(AWKWARD)))
def test_unicode_nul_and_deep_data_round_trip_exactly(ex, value):
    result = ex.run(echo_input(), {"v": value}, timeout=WAIT)
    assert result.status == "succeeded"
    assert result.output == value and result.steps["a"].output == value
    assert result.inputs == {"v": value}
    again = type(result).model_validate_json(result.model_dump_json())
    assert again.output == value


def test_a_flow_whose_data_holds_nul_and_unicode_runs(ex):
    flow = Flow(
        name="ünïcode\x00flow",
        steps=[
            Step(id="a", tool="echo", inputs={"value": {"ключ\x00": "$input.v", "$$lit": 1}}),
            Step(id="b", tool="echo", inputs={"value": "$steps.a"}),
        ],
        output={"out\x00": "$steps.b"},
    )
    result = ex.run(flow, {"v": "🎉\x00"}, timeout=WAIT)
    assert result.status == "succeeded"
    assert result.output == {"out\x00": {"ключ\x00": "🎉\x00", "$$lit": 1}}  # keys are data
    assert result.flow_name == "ünïcode\x00flow"
