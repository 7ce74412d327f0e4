"""Flow validation: every problem at once, and the dependency graph of valid flows."""

from __future__ import annotations

import time

import pytest

from executor import Flow, FlowValidationError, Step, ToolRegistry, tool
from executor.model.dag import Dag
from executor.model.validation import validate_flow


@pytest.fixture
def registry() -> ToolRegistry:
    r = ToolRegistry()

    @tool(registry=r)
    def add(a: int, b: int = 0) -> int:
        return a + b

    @tool(registry=r)
    def fetch(url: str) -> dict:
        return {"url": url}

    @tool(registry=r)
    def noop() -> None:
        return None

    @tool(registry=r)
    def anything(**kwargs: object) -> int:
        return len(kwargs)

    @tool(registry=r, name="async_tool")
    async def async_tool(x: int) -> int:
        return x

    return r


def problems_of(flow: Flow, registry: ToolRegistry | None = None) -> list[str]:
    with pytest.raises(FlowValidationError) as info:
        validate_flow(flow, registry)
    assert info.value.problems, "a FlowValidationError lists its problems"
    return info.value.problems


def has(problems: list[str], *fragments: str) -> bool:
    """Whether one problem line contains every fragment."""
    return any(all(f in p for f in fragments) for p in problems)


# --- valid flows and their graph -----------------------------------------------------


def test_valid_flow_deps_from_inputs_when_map_and_depends_on(registry):
    flow = Flow(
        name="ok",
        steps=[
            Step(id="a", tool="fetch", inputs={"url": "$input.url"}),
            Step(id="b", tool="add", inputs={"a": "$steps.a.n"}),
            Step(id="c", tool="add", inputs={"a": {"nested": ["$steps.b"]}}),
            Step(id="d", tool="add", inputs={"a": 1}, when="steps.c > 1"),
            Step(id="e", tool="add", inputs={"a": "$item", "b": "$index"}, map="$steps.a.xs"),
            Step(id="f", tool="noop", depends_on=["e"]),
            Step(
                id="g",
                tool="add",
                inputs={"a": "$steps.a", "b": "$steps.b.x"},
                depends_on=["a", "d", "a"],
                when="steps.b.ok and steps['c']",
            ),
            Step(id="h", tool="add", inputs={"a": "$$steps.zz"}),  # a literal, no edge
            Step(id="k", tool="anything", inputs={"whatever": 1, "else": "$steps.h"}),
            Step(id="m", tool="add", inputs={"a": "$item.v"}, map="$input.list", when="item.v"),
        ],
        output={"g": "$steps.g", "all": ["$steps.f", "$input.url"]},
    )
    # The structure only: g's inputs do not fit add's types (test_typecheck checks those).
    dag = validate_flow(flow, None)
    assert isinstance(dag, Dag)
    assert dag.deps == {
        "a": (),
        "b": ("a",),
        "c": ("b",),
        "d": ("c",),
        "e": ("a",),
        "f": ("e",),
        "g": ("a", "b", "c", "d"),
        "h": (),
        "k": ("h",),
        "m": (),
    }
    assert dag.dependents["a"] == ("b", "e", "g")
    assert set(dag.dependents["c"]) == {"d", "g"}
    assert dag.dependents["g"] == ()
    assert dag.roots == ["a", "h", "m"]
    order = dag.topological_order()
    assert len(order) == len(flow.steps)
    for sid, deps in dag.deps.items():
        for dep in deps:
            assert order.index(dep) < order.index(sid)
    assert set(dag.predicates) == {"d", "g", "m"}
    assert dag.predicates["g"].steps == frozenset({"b", "c"})


def test_validate_method_returns_the_flow_and_structure_only_without_registry():
    flow = Flow(name="f", steps=[Step(id="a", tool="not_registered", inputs={"q": 1})])
    assert flow.validate() is flow  # no registry: tools and inputs are not checked
    assert validate_flow(flow).deps == {"a": ()}


def test_async_and_var_keyword_tools_fit(registry):
    flow = Flow(
        name="f",
        steps=[
            Step(id="a", tool="async_tool", inputs={"x": 1}),
            Step(id="b", tool="anything"),
            Step(id="c", tool="anything", inputs={"p": 1, "q": "$steps.a"}),
        ],
    )
    assert flow.validate(registry) is flow


def test_large_flows_validate_quickly():
    n = 5000
    chain = Flow(
        name="chain",
        steps=[
            Step(id=f"s{i}", tool="t", inputs={"x": f"$steps.s{i - 1}"} if i else {})
            for i in range(n)
        ],
    )
    start = time.perf_counter()
    dag = validate_flow(chain)
    assert time.perf_counter() - start < 2.0
    assert dag.topological_order() == [f"s{i}" for i in range(n)]
    ring = Flow(
        name="ring",
        steps=[
            Step(id=f"s{i}", tool="t", inputs={"x": f"$steps.s{(i + 1) % n}"}) for i in range(n)
        ],
    )
    start = time.perf_counter()
    problems = problems_of(ring)  # iterative: no RecursionError on a 5000-step cycle
    assert time.perf_counter() - start < 2.0
    assert len(problems) == 1 and problems[0].startswith("cycle: s0 -> s4999 -> s4998")
    assert problems[0].endswith("s1 -> s0")


# --- each kind of problem ------------------------------------------------------------


def test_duplicate_ids():
    flow = Flow(name="f", steps=[Step(id="a", tool="t"), Step(id="a", tool="t")])
    assert problems_of(flow) == ["step 'a': duplicate id"]


@pytest.mark.parametrize("bad_id", ["1a", "-a", "a b", "a.b", "a\n", "é"])
def test_invalid_step_ids(bad_id):
    flow = Flow(name="f", steps=[Step(id=bad_id, tool="t")])
    assert has(problems_of(flow), repr(bad_id), "invalid id")


def test_unknown_step_in_reference_and_depends_on():
    flow = Flow(
        name="f",
        steps=[
            Step(id="a", tool="t", inputs={"x": "$steps.ghost.v"}),
            Step(id="b", tool="t", depends_on=["phantom"]),
        ],
    )
    problems = problems_of(flow)
    assert has(problems, "step 'a'", "$steps.ghost.v", "unknown step 'ghost'")
    assert has(problems, "step 'b'", "depends_on", "unknown step 'phantom'")
    assert len(problems) == 2


@pytest.mark.parametrize(
    "step",
    [
        Step(id="a", tool="t", inputs={"x": "$steps.a"}),
        Step(id="a", tool="t", inputs={"x": ["$steps.a.v"]}),
        Step(id="a", tool="t", depends_on=["a"]),
        Step(id="a", tool="t", when="steps.a.ok"),
        Step(id="a", tool="t", map="$steps.a.list", inputs={"x": "$item"}),
    ],
)
def test_self_reference(step):
    problems = problems_of(Flow(name="f", steps=[step]))
    assert problems == [problems[0]] and "refers to the step itself" in problems[0]
    assert problems[0].startswith("step 'a':")


def test_cycle_with_its_path():
    flow = Flow(
        name="f",
        steps=[
            Step(id="a", tool="t", inputs={"x": "$steps.c"}),
            Step(id="b", tool="t", inputs={"x": "$steps.a"}),
            Step(id="c", tool="t", depends_on=["b"]),
            Step(id="d", tool="t", inputs={"x": "$steps.c"}),  # downstream, not on it
        ],
    )
    assert problems_of(flow) == ["cycle: a -> b -> c -> a"]


def test_two_step_cycle_through_when_and_map():
    flow = Flow(
        name="f",
        steps=[
            Step(id="x", tool="t", when="steps.y.go"),
            Step(id="y", tool="t", map="$steps.x.items", inputs={"v": "$item"}),
        ],
    )
    assert problems_of(flow) == ["cycle: x -> y -> x"]  # starts at the first in flow order


def test_every_independent_cycle_is_reported():
    flow = Flow(
        name="f",
        steps=[
            Step(id="a", tool="t", depends_on=["b"]),
            Step(id="b", tool="t", depends_on=["a"]),
            Step(id="ok", tool="t"),
            Step(id="c", tool="t", depends_on=["d"]),
            Step(id="d", tool="t", depends_on=["e"]),
            Step(id="e", tool="t", depends_on=["c"]),
        ],
    )
    problems = problems_of(flow)
    assert problems == ["cycle: a -> b -> a", "cycle: c -> e -> d -> c"]


def test_unknown_tool_with_registry(registry):
    flow = Flow(name="f", steps=[Step(id="a", tool="nosuch")])
    problems = problems_of(flow, registry)
    assert has(problems, "step 'a'", "unknown tool 'nosuch'", "add", "fetch")
    assert flow.validate() is flow  # without a registry the tool is not checked


def test_unknown_tool_message_caps_the_known_list():
    r = ToolRegistry()
    for i in range(50):
        tool(name=f"t{i:02d}", registry=r)(lambda: None)
    problems = problems_of(Flow(name="f", steps=[Step(id="a", tool="x")]), r)
    assert has(problems, "t00", "...") and not has(problems, "t49")


@pytest.mark.parametrize(
    ("inputs", "fragments"),
    [
        ({}, ["missing required input 'a'"]),
        ({"b": 1}, ["missing required input 'a'"]),
        ({"a": 1, "zz": 2}, ["unknown input 'zz'", "parameters: a, b"]),
        ({"a": 1, "class": 2}, ["unknown input 'class'"]),
        ({"a": 1, "not valid": 2}, ["input name 'not valid' is not a valid parameter name"]),
    ],
)
def test_inputs_not_fitting_the_signature(registry, inputs, fragments):
    problems = problems_of(
        Flow(name="f", steps=[Step(id="s", tool="add", inputs=inputs)]), registry
    )
    for fragment in fragments:
        assert has(problems, "step 's'", fragment), (fragment, problems)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("$foo", "'$foo' is not a reference"),
        ("$steps.", "empty path segment"),
        ("$steps", "must name a step"),
        ("$steps.1x", "invalid step id"),
        ("$input..a", "empty path segment"),
        ("$index.x", "$index is a number"),
        ("$", "is not a reference"),
    ],
)
def test_bad_reference_syntax(text, fragment):
    flow = Flow(name="f", steps=[Step(id="s", tool="t", inputs={"x": {"deep": [text]}})])
    assert has(problems_of(flow), "step 's'", fragment)


@pytest.mark.parametrize("text", ["$item", "$item.url", "$index"])
def test_item_and_index_outside_a_map_step(text):
    flow = Flow(name="f", steps=[Step(id="s", tool="t", inputs={"x": text})])
    assert has(problems_of(flow), "step 's'", text, "only available in a map step")


@pytest.mark.parametrize("when", ["item.x > 1", "index == 0"])
def test_when_using_item_outside_a_map_step(when):
    flow = Flow(name="f", steps=[Step(id="s", tool="t", when=when)])
    assert has(problems_of(flow), "step 's'", "item/index outside a map step")


@pytest.mark.parametrize(
    ("map_ref", "fragment"),
    [
        ("notaref", "map must be a reference to a list"),
        ("$item", "map must be a reference to a list"),
        ("$index", "map must be a reference to a list"),
        ("$steps.", "map '$steps.' has an empty path segment"),
        ("$steps.nope.list", "map $steps.nope.list names unknown step 'nope'"),
    ],
)
def test_bad_map(map_ref, fragment):
    flow = Flow(name="f", steps=[Step(id="s", tool="t", map=map_ref, inputs={"x": "$item"})])
    assert has(problems_of(flow), "step 's'", fragment)


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("__import__('os')", "call other than len()"),
        ("input.__class__", "'__class__'"),
        ("steps.a.x >", "not a valid expression"),
        ("", "non-empty expression"),
        ("2 ** 100", "Pow"),
        ("steps.ghost.x", "unknown step 'ghost'"),
    ],
)
def test_bad_predicates(when, fragment):
    flow = Flow(name="f", steps=[Step(id="a", tool="t"), Step(id="s", tool="t", when=when)])
    assert has(problems_of(flow), "step 's'", fragment)


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("$steps.nope", "output: reference $steps.nope names unknown step 'nope'"),
        ({"x": ["$steps.nope.v"]}, "unknown step 'nope'"),
        ("$item", "output: $item is only available in a map step"),
        ("$bad", "output: '$bad' is not a reference"),
    ],
)
def test_bad_output(output, fragment):
    flow = Flow(name="f", steps=[Step(id="a", tool="t")], output=output)
    assert has(problems_of(flow), fragment)


def test_output_literals_and_valid_references_pass():
    flow = Flow(
        name="f",
        steps=[Step(id="a", tool="t")],
        output={"a": "$steps.a.x", "i": "$input", "lit": "$$steps.nope", "n": [1, None]},
    )
    assert validate_flow(flow).deps == {"a": ()}


def test_empty_flow():
    assert problems_of(Flow(name="f", steps=[])) == ["flow has no steps"]


def test_deeply_nested_inputs_are_a_problem_not_a_crash():
    deep: object = "$input.x"
    for _ in range(1000):
        deep = [deep]
    flow = Flow(name="f", steps=[Step(id="s", tool="t", inputs={"x": deep})], output=deep)
    problems = problems_of(flow)
    assert has(problems, "step 's'", "nested deeper")
    assert has(problems, "output", "nested deeper")


# --- everything at once --------------------------------------------------------------


def test_every_problem_is_reported_at_once(registry):
    flow = Flow(
        name="broken",
        steps=[
            Step(id="a", tool="add", inputs={"a": 1}),
            Step(id="a", tool="add", inputs={"a": 2}),  # duplicate
            Step(id="b", tool="add", inputs={"a": "$steps.ghost"}),  # unknown ref
            Step(id="c", tool="add", inputs={"a": 1}, depends_on=["phantom"]),  # unknown dep
            Step(id="d", tool="add", inputs={"a": "$steps.d"}),  # self
            Step(id="e", tool="nosuch"),  # unknown tool
            Step(id="f", tool="add", inputs={"a": 1}, when="__import__('os')"),  # predicate
            Step(id="g", tool="add", inputs={"a": "$foo", "b": "$steps."}),  # syntax x2
            Step(id="h", tool="add", inputs={"a": "$item"}),  # $item outside map
            Step(id="i", tool="add", inputs={"b": 1, "zz": 2}),  # missing + unknown
            Step(id="x", tool="add", inputs={"a": "$steps.z"}),  # cycle x -> y -> z
            Step(id="y", tool="add", inputs={"a": "$steps.x"}),
            Step(id="z", tool="add", inputs={"a": "$steps.y"}),
            Step(id="bad id", tool="add", inputs={"a": 1}),
        ],
        output="$steps.unknown",
    )
    with pytest.raises(FlowValidationError) as info:
        flow.validate(registry)
    problems = info.value.problems
    expected = [
        ("step 'a'", "duplicate id"),
        ("step 'b'", "unknown step 'ghost'"),
        ("step 'c'", "depends_on", "unknown step 'phantom'"),
        ("step 'd'", "refers to the step itself"),
        ("step 'e'", "unknown tool 'nosuch'"),
        ("step 'f'", "when", "call other than len()"),
        ("step 'g'", "'$foo' is not a reference"),
        ("step 'g'", "'$steps.' has an empty path segment"),
        ("step 'h'", "$item is only available in a map step"),
        ("step 'i'", "missing required input 'a'"),
        ("step 'i'", "unknown input 'zz'"),
        ("cycle: x -> y -> z -> x",),
        ("step 'bad id'", "invalid id"),
        ("output", "unknown step 'unknown'"),
    ]
    for fragments in expected:
        assert has(problems, *fragments), (fragments, problems)
    assert len(problems) == len(expected)
    message = str(info.value)
    assert f"{len(expected)} problems" in message
    for p in problems:
        assert p in message


def test_source_names_the_origin():
    flow = Flow(name="f", steps=[Step(id="a", tool="t", inputs={"x": "$foo"})])
    with pytest.raises(FlowValidationError) as info:
        validate_flow(flow, None, source="flows/x.yaml")
    assert info.value.source == "flows/x.yaml"
    assert str(info.value).startswith("flows/x.yaml: ")
