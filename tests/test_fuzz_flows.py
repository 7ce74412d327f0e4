"""Fuzzing the flow loader and validator: random bytes, random structures, mutated valid
flows. Whatever comes in, the answer is a `Flow` or one `FlowValidationError` — never
another exception, never a hang. The documented limits (size, depth, steps, string
length, alias expansion) are checked one by one in tests/test_files.py; here they hold
under random input too.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from executor import Flow, FlowValidationError, ToolRegistry, tool
from executor.model.files import MAX_BYTES, MAX_DEPTH, MAX_STEPS, MAX_STRING
from executor.model.predicates import PredicateError, parse_predicate

pytestmark = pytest.mark.timeout(120)
#: One example may take this long at most (a loaded 2-core CI machine included).
SLOW = 2.0
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
)

registry = ToolRegistry()


@tool(registry=registry)
def t(x: Any = None, y: int = 0) -> Any:
    return x


@tool(registry=registry)
def add(a: int, b: int) -> int:
    return a + b


VALID_YAML = """\
name: fuzz
version: "1"
output: {sum: $steps.total, first: "$steps.a"}
on_failure: continue
timeout: 30
steps:
  - id: a
    tool: t
    inputs: {x: $input.x, y: 3}
    retry: {max_attempts: 3, backoff: 0.1, retry_on: [TimeoutError]}
  - id: b
    tool: t
    inputs: {x: [$steps.a, "$$literal", {deep: $input.items.0}]}
    when: "steps.a > 1 and input.mode == 'fast' or len(input.items) >= 2"
    trigger: none_failed
  - id: each
    tool: t
    map: $input.items
    inputs: {x: $item, y: $index}
  - id: total
    tool: add
    inputs: {a: 1, b: 2}
    depends_on: [b, each]
    trigger: all_done
    queue: io
    timeout: 5
"""
VALID_DATA = yaml.safe_load(VALID_YAML)


def load(text: str | bytes, fmt: str) -> None:
    """Parse and validate; only FlowValidationError may come out, and quickly."""
    start = time.perf_counter()
    try:
        flow = Flow.from_yaml(text) if fmt == "yaml" else Flow.from_json(text)
        flow.validate(registry)
        flow.validate()
    except FlowValidationError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        str(exc)  # the message renders
    finally:
        elapsed = time.perf_counter() - start
        assert elapsed < SLOW, f"took {elapsed:.2f}s"


# Random bytes and text --------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=2048), fmt=st.sampled_from(["yaml", "json"]))
def test_random_bytes(data, fmt):
    load(data, fmt)


YAML_ALPHABET = st.sampled_from(
    [
        *"abcdefghijklmnopqrstuvwxyz0123456789 \t\n:-[]{},&*!|>'\"#%@`?$.\\/\x00\x85\ufeff",
        *("\u2028", "é", "🎉", "\ud800", "<<", "---", "...", "*a", "&a"),
        "!!python/object/apply:os.system",
    ]
)


@FUZZ
@given(
    text=st.lists(YAML_ALPHABET, max_size=300).map("".join), fmt=st.sampled_from(["yaml", "json"])
)
def test_random_yaml_like_text(text, fmt):
    load(text, fmt)


# Random structures ---------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "$input",
            "$input.x",
            "$steps.a",
            "$steps.nope.x",
            "$item",
            "$index",
            "$$x",
            "$",
            "$steps.",
        ]
    )
)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "steps",
                    "id",
                    "tool",
                    "inputs",
                    "depends_on",
                    "when",
                    "trigger",
                    "map",
                    "retry",
                    "timeout",
                    "queue",
                    "output",
                    "on_failure",
                    "version",
                    "x",
                    "max_attempts",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@FUZZ
@given(data=structures, fmt=st.sampled_from(["yaml", "json"]))
def test_random_structures(data, fmt):
    text = json.dumps(data) if fmt == "json" else yaml.safe_dump(data)
    load(text, fmt)


# Mutated valid flows ----------------------------------------------------------------------
@st.composite
def text_mutations(draw: Any) -> str:
    text = VALID_YAML
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace", "dup-line", "swap-lines"]))
        if kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)) :]
        elif kind == "insert":
            text = text[:i] + draw(st.lists(YAML_ALPHABET, max_size=10).map("".join)) + text[i:]
        elif kind == "replace" and i < len(text):
            text = text[:i] + draw(YAML_ALPHABET) + text[i + 1 :]
        else:
            lines = text.split("\n")
            a = draw(st.integers(0, len(lines) - 1))
            b = draw(st.integers(0, len(lines) - 1))
            if kind == "dup-line":
                lines.insert(b, lines[a])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@FUZZ
@given(text=text_mutations())
def test_mutated_valid_yaml(text):
    load(text, "yaml")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(data=st.data())
def test_mutated_valid_structures(data):
    flow = json.loads(json.dumps(VALID_DATA))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(flow)))
        if not path:
            continue
        parent = flow
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete"]))
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(structures)
    load(json.dumps(flow), "json")


def test_the_valid_flow_is_valid():
    Flow.from_yaml(VALID_YAML).validate(registry)


# Limits under random input -------------------------------------------------------------
@settings(max_examples=20, deadline=None, database=None)
@given(depth=st.integers(MAX_DEPTH + 1, 4 * MAX_DEPTH), fmt=st.sampled_from(["yaml", "json"]))
def test_nesting_deeper_than_the_limit_is_refused(depth, fmt):
    value: Any = 1
    for _ in range(depth):
        value = [value]
    data = {"name": "deep", "steps": [{"id": "a", "tool": "t", "inputs": {"x": value}}]}
    text = json.dumps(data) if fmt == "json" else yaml.safe_dump(data)
    with pytest.raises(FlowValidationError) as info:
        load_strict(text, fmt)
    assert "deep" in str(info.value).lower()


@settings(max_examples=5, deadline=None, database=None)
@given(extra=st.integers(1, 50), fmt=st.sampled_from(["yaml", "json"]))
def test_too_many_steps_or_too_long_strings_or_bytes_are_refused(extra, fmt):
    many = {"name": "m", "steps": [{"id": f"s{i}", "tool": "t"} for i in range(MAX_STEPS + extra)]}
    long = {"name": "x" * (MAX_STRING + extra), "steps": []}
    big = {"name": "b", "steps": [], "output": ["y" * 1000] * (MAX_BYTES // 1000 + extra)}
    for data in (many, long, big):
        text = json.dumps(data) if fmt == "json" else yaml.safe_dump(data, width=10**9)
        with pytest.raises(FlowValidationError):
            load_strict(text, fmt)


def load_strict(text: str, fmt: str) -> Flow:
    start = time.perf_counter()
    try:
        return Flow.from_yaml(text) if fmt == "yaml" else Flow.from_json(text)
    finally:
        assert time.perf_counter() - start < SLOW


@settings(max_examples=30, deadline=None, database=None)
@given(width=st.integers(2, 12), levels=st.integers(5, 12))
def test_alias_bombs_of_any_shape_are_refused_quickly(width, levels):
    assume(width**levels > 200_000)
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines += ["name: bomb", f"steps: [{{id: a, tool: t, inputs: {{x: *l{levels - 1}}}}}]"]
    with pytest.raises(FlowValidationError) as info:
        load_strict("\n".join(lines) + "\n", "yaml")
    assert "alias" in str(info.value)


# Predicates: random expressions ---------------------------------------------------------
EXPR_ATOMS = st.sampled_from(
    [
        "input",
        "steps",
        "steps.a",
        "input.x",
        "1",
        "'s'",
        "None",
        "True",
        "len",
        "len(input)",
        "__class__",
        "__import__",
        "().__class__",
        "lambda: 1",
        "x",
        "[1]",
        "{}",
        "f'{x}'",
        "2**99999",
        "'a'*99999",
    ]
)
EXPR_OPS = st.sampled_from(
    [
        " and ",
        " or ",
        " not ",
        " == ",
        " < ",
        " in ",
        " + ",
        " ** ",
        " * ",
        ".",
        "(",
        ")",
        "[",
        "]",
        ",",
        " if ",
        " else ",
        " for ",
        ":",
        "=",
        ";",
    ]
)


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # ast.parse on "1if": harmless
@FUZZ
@given(parts=st.lists(EXPR_ATOMS | EXPR_OPS, max_size=12))
def test_random_predicates_parse_or_raise_predicate_error(parts):
    src = "".join(parts)
    start = time.perf_counter()
    try:
        pred = parse_predicate(src)
    except PredicateError:
        pass
    else:
        with contextlib.suppress(PredicateError):
            pred.evaluate({"x": 1, "mode": "fast"}, {"a": {"score": 0.9}})
    assert time.perf_counter() - start < SLOW
