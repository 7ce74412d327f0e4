"""Types across steps checked at validation: reference paths and what flows into a parameter."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from executor import Flow, FlowValidationError, ToolRegistry

reg = ToolRegistry()


class Address(BaseModel):
    city: str
    zip: int


class User(BaseModel):
    name: str
    age: int
    address: Address | None = None
    scores: list[float] = []
    pair: tuple[str, int] = ("a", 1)


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    known: str = ""


@reg.tool
def user() -> User:
    return User(name="x", age=1)


@reg.tool
def users() -> list[User]:
    return []


@reg.tool
def table() -> dict[str, int]:
    return {}


@reg.tool
def loose() -> Loose:
    return Loose()


@reg.tool
def untyped():  # type: ignore[no-untyped-def]
    return 1


@reg.tool
def want_int(x: int) -> int:
    return x


@reg.tool
def want_float(x: float) -> float:
    return x


@reg.tool
def want_str(x: str) -> str:
    return x


@reg.tool
def want_any(x: Any) -> Any:
    return x


@reg.tool
def want_optional(x: int | None = None) -> int:
    return x or 0


def check(steps: list[dict[str, Any]], **flow: Any) -> list[str]:
    """The problems validation finds (empty when the flow is valid)."""
    f = Flow.model_validate({"name": "t", "steps": steps, **flow})
    try:
        f.validate(reg)
    except FlowValidationError as exc:
        return exc.problems
    return []


def step(sid: str, tool: str, **inputs: Any) -> dict[str, Any]:
    return {"id": sid, "tool": tool, "inputs": inputs}


@pytest.mark.parametrize(
    "ref",
    [
        "$steps.u.age",
        "$steps.u.address.zip",  # through Optional[Address]
        "$steps.u.pair.1",  # a tuple's second member
        "$steps.t.anykey",  # a dict's values
        "$steps.us.0.age",
        "$steps.us.-1.age",
        "$steps.l.whatever",  # extra="allow": any field may be there
        "$steps.n.a.b",  # no annotation: anything
    ],
)
def test_paths_and_types_that_fit_pass(ref: str) -> None:
    base = [step("u", "user"), step("us", "users"), step("t", "table"), step("l", "loose")]
    base.append(step("n", "untyped"))
    target = "want_any" if ref.startswith(("$steps.l", "$steps.n")) else "want_int"
    assert check([*base, step("c", target, x=ref)]) == []


@pytest.mark.parametrize(
    ("inputs", "tool", "problem"),
    [
        (
            {"x": "$steps.u.nmae"},
            "want_str",
            "step 'c': reference $steps.u.nmae: the output of step 'u' has no field 'nmae' "
            "(fields: name, age, address, scores, pair)",
        ),
        (
            {"x": "$steps.u.address.town"},
            "want_str",
            "step 'c': reference $steps.u.address.town: the output of step 'u' has no field "
            "'town' (fields: city, zip)",
        ),
        (
            {"x": "$steps.u.name.first"},
            "want_str",
            "has no field 'first' (it is a string)",
        ),
        (
            {"x": "$steps.u.name"},
            "want_int",
            "step 'c': input 'x' = $steps.u.name (output of step 'u'): a string cannot be "
            "parameter 'x' of tool 'want_int' (integer)",
        ),
        ({"x": "$steps.u"}, "want_int", "an object cannot be parameter 'x'"),
        ({"x": "$steps.us"}, "want_str", "an array cannot be parameter 'x'"),
        ({"x": "$steps.u.scores.0"}, "want_str", "a number cannot be parameter 'x'"),
        # Nested references are checked for their paths too.
        ({"x": ["$steps.u.agee"]}, "want_any", "has no field 'agee'"),
    ],
)
def test_a_reference_that_cannot_fit_is_a_problem_before_the_run(
    inputs: dict[str, Any], tool: str, problem: str
) -> None:
    problems = check([step("u", "user"), step("us", "users"), step("c", tool, **inputs)])
    assert len(problems) == 1 and problem in problems[0]


def test_numbers_fit_both_ways_and_none_fits_an_optional() -> None:
    assert check([step("u", "user"), step("f", "want_float", x="$steps.u.age")]) == []
    assert check([step("u", "user"), step("i", "want_int", x="$steps.u.scores.0")]) == []
    assert check([step("u", "user"), step("o", "want_optional", x="$steps.u.age")]) == []


def test_map_items_are_typed_by_their_source() -> None:
    ok = {"id": "m", "tool": "want_int", "map": "$steps.us", "inputs": {"x": "$item.age"}}
    assert check([step("us", "users"), ok]) == []
    bad = {**ok, "inputs": {"x": "$item.name"}}
    assert "a string cannot be parameter 'x'" in check([step("us", "users"), bad])[0]
    typo = {**ok, "inputs": {"x": "$item.agge"}}
    assert "the map item has no field 'agge'" in check([step("us", "users"), typo])[0]
    index = {**ok, "inputs": {"x": "$index"}}
    assert check([step("us", "users"), index]) == []
    # A map step's output is the list of its items' outputs.
    after = step("s", "want_str", x="$steps.m")
    assert "an array cannot be parameter 'x'" in check([step("us", "users"), ok, after])[0]


SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "who": {"type": "string"}},
    "required": ["n"],
    "additionalProperties": False,
}


def test_the_input_schema_types_input_references() -> None:
    assert check([step("a", "want_int", x="$input.n")], input=SCHEMA) == []
    assert check([step("a", "want_int", x="$input.who")], input=SCHEMA) == [
        "step 'a': input 'x' = $input.who (the flow's input): a string cannot be parameter "
        "'x' of tool 'want_int' (integer)"
    ]
    assert check([step("a", "want_int", x="$input.m")], input=SCHEMA) == [
        "step 'a': reference $input.m: the flow's input has no field 'm' (fields: n, who)"
    ]
    # Without a schema the input is unknown: nothing to check.
    assert check([step("a", "want_int", x="$input.m")]) == []


def test_the_output_references_are_checked_too() -> None:
    assert check([step("u", "user")], output={"a": "$steps.u.agee"}) == [
        "output: reference $steps.u.agee: the output of step 'u' has no field 'agee' "
        "(fields: name, age, address, scores, pair)"
    ]


def test_an_input_block_that_is_no_json_schema_is_one_line() -> None:
    assert check([step("a", "want_any", x=1)], input={"type": "objekt"}) == [
        "input: not a valid JSON Schema at type: 'objekt' is not valid under any of the "
        "given schemas"
    ]
    assert check([step("a", "want_any", x=1)], input={"type": "object", "required": 3}) != []
