"""`when` predicates: semantics of the safe evaluator, and an injection corpus it refuses."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from executor import Flow, FlowValidationError, Step
from executor.model.predicates import MAX_LENGTH, Predicate, PredicateError, parse_predicate
from executor.model.validation import validate_flow

INPUT = {
    "mode": "fast",
    "n": 3,
    "ratio": 0.25,
    "tags": ["a", "b"],
    "cfg": {"on": True, "depth": 2, "name": "x", "nested": {"k": [10, 20, 30]}},
    "items": [{"x": 1}, {"x": 2}],
    "empty": [],
    "nothing": None,
    "format": "key named like a str method",
    "__class__": "key named like a dunder",
}
STEPS = {
    "check": {"score": 0.7, "ok": True, "labels": ["spam", "ham"], "meta": {"n": 0}},
    "count": 5,
    "skipped": None,  # a step that did not succeed: its output is None
    "with-dash": {"v": 1},
    "words": "hello world",
}


def ev(src: str, input=INPUT, steps=STEPS, item=None, index=None) -> bool:
    return parse_predicate(src).evaluate(input, steps, item, index)


# --- semantics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        # comparisons
        ("steps.check.score > 0.5", True),
        ("steps.check.score < 0.5", False),
        ("steps.check.score >= 0.7", True),
        ("steps.check.score <= 0.69", False),
        ("input.mode == 'fast'", True),
        ("input.mode != 'fast'", False),
        ("1 < input.n < 5", True),
        ("1 < input.n < 2", False),
        ("input.n == 3 == steps.count - 2", True),
        # and / or / not, short-circuit
        ("steps.check.score > 0.5 and input.mode == 'fast'", True),
        ("steps.check.score > 0.5 and input.mode == 'slow'", False),
        ("input.mode == 'slow' or steps.check.ok", True),
        ("not steps.check.ok", False),
        ("not (input.n > 5)", True),
        ("input.mode == 'slow' and input.missing_key", False),  # not evaluated
        ("input.mode == 'fast' or input.missing_key", True),  # not evaluated
        # in / not in
        ("'spam' in steps.check.labels", True),
        ("'eggs' not in steps.check.labels", True),
        ("input.mode in ['fast', 'slow']", True),
        ("input.mode in ('slow', 'safe')", False),
        ("'on' in input.cfg", True),
        ("'world' in steps.words", True),
        # literals
        ("True", True),
        ("False", False),
        ("None", False),
        ("0", False),
        ("''", False),
        ("'x'", True),
        ("[]", False),
        ("[0]", True),
        ("-1 < 0", True),
        ("1e3 == 1000", True),
        # truthiness of data
        ("input.tags", True),
        ("input.empty", False),
        ("input.nothing", False),
        ("steps.check.meta.n", False),
        # is / is not
        ("input.nothing is None", True),
        ("input.mode is not None", True),
        # len()
        ("len(input.tags) == 2", True),
        ("len(steps.check.labels) > 1", True),
        ("len(input.empty) == 0", True),
        ("len(steps.words) == 11", True),
        ("len(input.cfg) == 4", True),
        # attribute = key lookup, subscripts with constant index
        ("input.cfg.nested.k[0] == 10", True),
        ("input.cfg.nested.k[-1] == 30", True),
        ("input.cfg['nested']['k'][1] == 20", True),
        ("input.items[1].x == 2", True),
        ("input.items[-2]['x'] == 1", True),
        ("steps['with-dash'].v == 1", True),
        ("steps['check'].score == steps.check.score", True),
        ("input.format == 'key named like a str method'", True),
        ("input['__class__'] == 'key named like a dunder'", True),
        # arithmetic on numbers
        ("input.n * 2 + 1 == 7", True),
        ("input.n - 4 == -1", True),
        ("input.n / 2 == 1.5", True),
        ("input.n // 2 == 1", True),
        ("input.n % 2 == 1", True),
        ("-input.n == -3", True),
        ("+input.ratio == 0.25", True),
        ("steps.count * input.ratio > 1", True),
        ("(steps.count + 1) * 2 == 12", True),
    ],
)
def test_semantics(src, expected):
    assert ev(src) is expected


def test_evaluate_returns_a_bool():
    assert ev("input.tags") is True
    assert ev("input.n") is True
    assert ev("input.empty or input.nothing") is False


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        # None propagation: a step that did not succeed has None output and fields.
        ("steps.skipped", False),
        ("steps.skipped is None", True),
        ("steps.skipped.score is None", True),
        ("steps.skipped.a.b[0].c is None", True),
        ("steps.skipped.score > 0.5", False),
        ("steps.skipped.score < 0.5", False),
        ("steps.skipped.score >= 0", False),
        ("steps.skipped.score == 1", False),
        ("steps.skipped.score != 1", True),
        ("steps.skipped.score + 1 is None", True),
        ("-steps.skipped.score is None", True),
        ("len(steps.skipped.rows) is None", True),
        ("len(steps.skipped.rows) > 0", False),
        ("'x' in steps.skipped.labels", False),
        ("'x' not in steps.skipped.labels", True),
        ("steps.skipped.x in 'abc'", False),
        ("steps.skipped.x not in 'abc'", True),
        ("steps.skipped.x in [1, None]", True),
        ("steps.skipped.x in [1, 2]", False),
        ("steps.skipped.score > 0.5 or steps.check.score > 0.5", True),
        ("steps.never_ran.x is None", True),  # absent from the mapping entirely
    ],
)
def test_none_propagation(src, expected):
    assert ev(src) is expected


def test_item_and_index_in_map_steps():
    p = parse_predicate("item.size > 10 and index < 2")
    assert p.evaluate(INPUT, STEPS, {"size": 11}, 0) is True
    assert p.evaluate(INPUT, STEPS, {"size": 11}, 2) is False
    assert p.evaluate(INPUT, STEPS, {"size": 1}, 0) is False
    assert parse_predicate("item == 'x'").evaluate({}, {}, "x", 0) is True
    assert parse_predicate("index % 2 == 0").evaluate({}, {}, None, 4) is True


def test_steps_read_are_collected():
    p = parse_predicate(
        "steps.a.x > 1 and steps['b-2'].y or len(steps.c.z) == 0 and input.q and item"
    )
    assert isinstance(p, Predicate)
    assert p.steps == frozenset({"a", "b-2", "c"})
    assert p.source.startswith("steps.a.x")
    assert parse_predicate("input.x == 1").steps == frozenset()


def test_parse_once_evaluate_many():
    p = parse_predicate("steps.s.v > input.t")
    assert [p.evaluate({"t": t}, {"s": {"v": 5}}) for t in (1, 5, 9)] == [True, False, False]


@pytest.mark.parametrize(
    ("src", "fragment"),
    [
        ("input.missing > 1", "no key 'missing'"),
        ("input.tags[5] == 'x'", "index 5 out of range"),
        ("input.n.x", "cannot look up 'x' in a number"),
        ("input.mode.x", "cannot look up 'x' in a string"),
        ("input.mode + 1 > 0", "arithmetic needs numbers, got a string"),
        ("input.cfg.on + 1 > 0", "arithmetic needs numbers, got a boolean"),
        ("input.tags * 2", "arithmetic needs numbers, got a list"),
        ("input.n < 'a'", "not supported"),
        ("1 / (input.n - 3) > 0", "division by zero"),
        ("len(input.n) > 0", "has no len"),
        ("input.n in 5", "not iterable"),
    ],
)
def test_runtime_errors_are_predicate_errors(src, fragment):
    p = parse_predicate(src)  # valid to parse: the data does not fit
    with pytest.raises(PredicateError) as info:
        p.evaluate(INPUT, STEPS)
    assert fragment in str(info.value)
    assert src[:20] in str(info.value)  # names the condition


def test_huge_arithmetic_results_are_refused_without_allocating():
    # Repeated multiplication of the largest allowed constant cannot grow without bound.
    big = "9" * 100
    p = parse_predicate(" * ".join([big] * 19) + " > 0")  # ~6300 bits, under 2000 chars
    with pytest.raises(PredicateError, match="too large"):
        p.evaluate({}, {})
    with pytest.raises(PredicateError, match="too large"):
        parse_predicate("input.n * 2 > 0").evaluate({"n": 10**2000}, {})


def test_predicate_error_is_a_value_error():
    assert issubclass(PredicateError, ValueError)


# --- injection corpus ----------------------------------------------------------------

INJECTION = [
    "__import__('os')",
    "__import__('os').system('echo pwned')",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "input.__class__",
    "input.__dict__",
    "steps.a.__globals__",
    "steps.check.__class__.__base__",
    "len.__self__",
    "len.__self__.open('x')",
    "input._private",
    "lambda: 1",
    "(lambda: 1)()",
    "[x for x in input]",
    "{x: 1 for x in input}",
    "{x for x in input}",
    "(x for x in input)",
    "any(x for x in input)",
    "f'{input}'",
    "f'a'",
    "2**10**10",
    "2 ** 8",
    "'a'*10**9",
    "'a' * 1000000000",
    "[1] * 100000000",
    "len('a' * 10**9) > 0",
    "'%s' % input",
    "'a' + 'b' == 'ab'",
    "(x := 1)",
    "(input := 1)",
    "open('x')",
    "getattr(input, 'a')",
    "eval('1')",
    "exec('1')",
    "print('x')",
    "int('1') == 1",
    "input.keys()",
    "input.mode.upper() == 'FAST'",
    "len(input, 2)",
    "len(x=input)",
    "len",
    "1 < len",
    "steps",
    "len(steps)",
    "'a' in steps",
    "steps[0]",
    "steps['not a step id']",
    "steps[input.x]",
    "input[input.x]",
    "input[1:2]",
    "input[::-1]",
    "input[-input.n]",
    "input[not input.n]",
    "*input",
    "[*input]",
    "{**input}",
    "{'a': 1}",
    "{1, 2}",
    "yield 1",
    "(yield)",
    "await input",
    "1 if input else 2",
    "input.a if True else 0",
    "import os",
    "input = 1",
    "input; 1",
    "del input",
    "__builtins__",
    "globals()",
    "os",
    "b'abc'",
    "1j",
    "...",
    "1 << 100000",
    "1 | 2",
    "1 & 2",
    "1 ^ 2",
    "~1",
    "input @ input",
    "9" * 101,
    "0x" + "f" * 200,
    "x" * (MAX_LENGTH + 1),
    "(" * 100_000 + "1" + ")" * 100_000,
    "(" * 500 + "1" + ")" * 500,
    "[" * 300 + "]" * 300,
    "-" * 1999 + "1",
    "not " * 499 + "1",
    "input" + ".a" * 900,
    "1+" * 999 + "1",
    "len(" * 300 + "input" + ")" * 300,
    "",
    "   ",
    "# just a comment",
    "input\x00",
    "input.a\n and input.b",
]


@pytest.mark.parametrize("src", INJECTION, ids=lambda s: repr(s[:40]))
def test_injection_corpus_is_refused_at_parse_time(src):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(PredicateError):
            parse_predicate(src)
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 50_000_000  # no huge allocation on the way to the refusal


@pytest.mark.parametrize("src", INJECTION[:80:7], ids=lambda s: repr(s[:40]))
def test_injection_as_a_when_is_a_validation_problem(src):
    flow = Flow(
        name="inj",
        steps=[
            Step(id="a", tool="t"),
            Step(id="b", tool="t", when=src, depends_on=["a"]),
        ],
    )
    with pytest.raises(FlowValidationError) as info:
        validate_flow(flow)
    assert any(p.startswith("step 'b': when") for p in info.value.problems), info.value.problems


def test_all_injection_whens_are_reported_at_once():
    corpus = INJECTION[:30]
    flow = Flow(
        name="inj",
        steps=[Step(id=f"s{i}", tool="t", when=src) for i, src in enumerate(corpus)],
    )
    with pytest.raises(FlowValidationError) as info:
        validate_flow(flow)
    for i in range(len(corpus)):
        assert any(p.startswith(f"step 's{i}': when") for p in info.value.problems), i


@pytest.mark.parametrize(
    "src",
    [
        "__import__('os').system('touch {marker}')",
        "__import__('os')",
        "open('{marker}', 'w')",
        "input.__class__",
        "os",
    ],
)
def test_interpreter_refuses_unchecked_trees_too(tmp_path, src):
    # Even a tree that skipped the checker cannot call anything: the interpreter only
    # knows len() and raises on every other node.
    import ast

    marker = tmp_path / "pwned"
    tree = ast.parse(src.format(marker=marker), mode="eval")
    p = Predicate("tampered", tree, frozenset())
    with pytest.raises(PredicateError):
        p.evaluate({"a": 1}, {})
    assert not marker.exists()


def test_messages_name_the_refused_construct():
    cases = {
        "input.__class__": "'__class__'",
        "open('x')": "call other than len()",
        "2 ** 3": "Pow",
        "'a' * 3": "arithmetic on something other than",
        "lambda: 1": "lambda",
        "[x for x in input]": "comprehension",
        "f'{input}'": "f-string",
        "1 if input else 2": "conditional expression",
        "(x := 1)": ":=",
        "input[1:2]": "subscript",
        "steps": "steps alone",
        "x" * 3000: f"longer than {MAX_LENGTH}",
        "-" * 1999 + "1": "too complex",
        "(" * 300 + "1" + ")" * 300: "not a valid expression",
        "secret": "the name 'secret'",
    }
    for src, fragment in cases.items():
        with pytest.raises(PredicateError) as info:
            parse_predicate(src)
        assert fragment in str(info.value), (src, str(info.value))
        assert len(str(info.value)) < 400  # long sources are cut in messages


@pytest.mark.parametrize(
    "src",
    [
        "(input.a\n and input.b)",
        "input.n > 1  # trailing comment",
        "  input.n > 1  ",
        "(" * 100 + "input.n" + ")" * 100 + " > 1",
        "-" * 150 + "1 < 0",
    ],
)
def test_harmless_unusual_but_valid_sources(src):
    p = parse_predicate(src)
    assert isinstance(p.evaluate({"a": 1, "b": 0, "n": 2}, {}), bool)
