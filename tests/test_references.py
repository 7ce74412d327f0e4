"""References in step inputs: parsing, resolving against a Scope, and their errors."""

from __future__ import annotations

import pytest

from executor.errors import StepInputError
from executor.model.references import (
    MAX_NESTING,
    STEP_ID,
    Ref,
    ReferenceSyntaxError,
    Scope,
    is_ref,
    iter_refs,
    parse_ref,
    walk,
)

INPUT = {
    "user": {"id": 7, "tags": ["a", "b", "c"], "address": {"city": "Oslo"}},
    "matrix": [[1, 2], [3, 4]],
    "items": [{"name": "x"}, {"name": "y"}],
    "empty": {},
    "nothing": None,
    "flag": False,
    "text": "hello",
}
OUTPUTS = {
    "fetch": {"rows": [{"id": 1, "v": 10}, {"id": 2, "v": 20}], "count": 2},
    "scalar": 42,
    "listy": [10, 20, 30],
    "null_output": None,
    "with-dash": {"ok": True},
}


@pytest.fixture
def scope() -> Scope:
    return Scope(INPUT, OUTPUTS)


# --- parse_ref ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root", "step", "path"),
    [
        ("$input", "input", None, ()),
        ("$input.user.id", "input", None, ("user", "id")),
        ("$input.matrix.1.0", "input", None, ("matrix", "1", "0")),
        ("$steps.fetch", "steps", "fetch", ()),
        ("$steps.fetch.rows.-1.v", "steps", "fetch", ("rows", "-1", "v")),
        ("$steps.with-dash.ok", "steps", "with-dash", ("ok",)),
        ("$steps._private", "steps", "_private", ()),
        ("$item", "item", None, ()),
        ("$item.a.b", "item", None, ("a", "b")),
        ("$index", "index", None, ()),
    ],
)
def test_parse_ref_valid(text, root, step, path):
    ref = parse_ref(text)
    assert ref == Ref(text, root, step, path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("$foo", "is not a reference"),
        ("$", "is not a reference"),
        ("$INPUT", "is not a reference"),
        ("$ input", "is not a reference"),
        ("$input[0]", "is not a reference"),
        ("$steps", "must name a step"),
        ("$steps.", "empty path segment"),
        ("$steps..a", "empty path segment"),
        ("$input.", "empty path segment"),
        ("$input..a", "empty path segment"),
        ("$input.a.", "empty path segment"),
        ("$steps.1abc", "invalid step id"),
        ("$steps.-a", "invalid step id"),
        ("$steps.a b", "invalid step id"),
        ("$steps.a[0]", "invalid step id"),
        ("$index.a", "$index is a number"),
    ],
)
def test_parse_ref_invalid(text, fragment):
    with pytest.raises(ReferenceSyntaxError) as info:
        parse_ref(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value) or text in str(info.value)


def test_reference_syntax_error_is_a_value_error():
    assert issubclass(ReferenceSyntaxError, ValueError)


@pytest.mark.parametrize(
    ("step_id", "ok"),
    [
        ("a", True),
        ("fetch_user", True),
        ("Step-2", True),
        ("_x", True),
        ("2nd", False),
        ("-a", False),
        ("a.b", False),
        ("a b", False),
        ("", False),
        ("a\n", False),  # `$` would match before a trailing newline; `\Z` does not
        ("é", False),
    ],
)
def test_step_id_pattern(step_id, ok):
    assert bool(STEP_ID.match(step_id)) is ok


def test_is_ref_and_iter_refs():
    assert is_ref("$input.a")
    assert is_ref("$foo")  # syntactically a reference attempt (validation rejects it)
    assert not is_ref("$$input")
    assert not is_ref("plain")
    assert not is_ref(3)
    assert not is_ref(None)
    value = {
        "a": "$input.x",
        "b": ["$steps.s1", {"c": "$steps.s2.k", "lit": "$$steps.s3"}, 5, None],
        "d": ("$item",),
        "e": "text",
    }
    assert list(iter_refs(value)) == ["$input.x", "$steps.s1", "$steps.s2.k", "$item"]
    assert list(iter_refs("$index")) == ["$index"]
    assert list(iter_refs(12)) == []


def test_iter_refs_deep_nesting_is_an_error_not_a_recursion_error():
    deep: object = "$input.x"
    for _ in range(MAX_NESTING + 50):
        deep = [deep]
    with pytest.raises(ReferenceSyntaxError, match="nested deeper"):
        list(iter_refs(deep))
    shallow: object = "$input.x"
    for _ in range(MAX_NESTING - 1):
        shallow = {"k": shallow}
    assert list(iter_refs(shallow)) == ["$input.x"]


def test_iter_refs_self_containing_value_terminates():
    loop: list[object] = ["$input.a"]
    loop.append(loop)
    with pytest.raises(ReferenceSyntaxError, match="nested deeper"):
        list(iter_refs(loop))


# --- Scope.resolve -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$input", INPUT),
        ("$input.user.id", 7),
        ("$input.user.address.city", "Oslo"),
        ("$input.user.tags.0", "a"),
        ("$input.user.tags.2", "c"),
        ("$input.user.tags.-1", "c"),
        ("$input.user.tags.-3", "a"),
        ("$input.matrix.1.0", 3),
        ("$input.matrix.-1.-1", 4),
        ("$input.items.1.name", "y"),
        ("$input.nothing", None),
        ("$input.flag", False),
        ("$input.empty", {}),
        ("$steps.fetch", OUTPUTS["fetch"]),
        ("$steps.fetch.count", 2),
        ("$steps.fetch.rows.0.v", 10),
        ("$steps.fetch.rows.-1.id", 2),
        ("$steps.scalar", 42),
        ("$steps.listy.1", 20),
        ("$steps.with-dash.ok", True),
        ("$steps.null_output", None),
    ],
)
def test_resolve_paths(scope, value, expected):
    assert scope.resolve(value) == expected


def test_resolve_nested_structures(scope):
    value = {
        "id": "$input.user.id",
        "pair": ["$steps.scalar", {"deep": ["$input.user.tags.1", "$$input.user"]}],
        "tuple": ("$steps.listy.0", 1),
        "literal": 3.5,
        "none": None,
        "bool": True,
        "plain": "no reference here",
        "dollar_inside": "costs $5",
    }
    assert scope.resolve(value) == {
        "id": 7,
        "pair": [42, {"deep": ["b", "$input.user"]}],
        "tuple": [10, 1],
        "literal": 3.5,
        "none": None,
        "bool": True,
        "plain": "no reference here",
        "dollar_inside": "costs $5",
    }


def test_resolve_does_not_mutate_the_raw_value(scope):
    raw = {"a": ["$input.user.id"], "b": {"c": "$steps.scalar"}}
    before = {"a": ["$input.user.id"], "b": {"c": "$steps.scalar"}}
    scope.resolve(raw)
    assert raw == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [("$$x", "$x"), ("$$", "$"), ("$$$x", "$$x"), ("$$input.user", "$input.user")],
)
def test_double_dollar_is_a_literal(scope, value, expected):
    assert scope.resolve(value) == expected


def test_step_without_output_resolves_to_none(scope):
    # Steps that did not succeed are absent from outputs: the reference and any path
    # below it are None (a join after a skipped branch sees None, not an error).
    assert scope.resolve("$steps.skipped") is None
    assert scope.resolve("$steps.skipped.a.b.0") is None
    assert scope.resolve({"x": "$steps.skipped.field"}) == {"x": None}


def test_map_scope_item_and_index():
    s = Scope(INPUT, OUTPUTS, item={"url": "u1", "n": [5, 6]}, index=3, in_map=True)
    assert s.resolve("$item") == {"url": "u1", "n": [5, 6]}
    assert s.resolve("$item.url") == "u1"
    assert s.resolve("$item.n.-1") == 6
    assert s.resolve("$index") == 3
    assert s.resolve(["$index", "$item.url", "$input.user.id"]) == [3, "u1", 7]
    s0 = Scope(INPUT, OUTPUTS, item=None, index=0, in_map=True)
    assert s0.resolve("$index") == 0
    assert s0.resolve("$item") is None


@pytest.mark.parametrize("text", ["$item", "$index", "$item.x"])
def test_item_outside_map_is_an_error(scope, text):
    with pytest.raises(StepInputError, match="only available in a map step"):
        scope.resolve(text)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("$input.missing", ["$input.missing", "no key 'missing'", "in $input", "user"]),
        ("$input.user.nope", ["no key 'nope'", "in $input.user", "address, id, tags"]),
        ("$input.user.tags.3", ["index 3 is out of range", "$input.user.tags", "list of 3"]),
        ("$input.user.tags.-4", ["index -4 is out of range"]),
        ("$input.user.tags.x", ["'x' is not a list index"]),
        ("$input.user.id.x", ["cannot look up 'x'", "$input.user.id", "a number"]),
        ("$input.text.0", ["cannot look up '0'", "a string"]),
        ("$input.nothing.x", ["cannot look up 'x'", "null"]),
        ("$input.empty.k", ["no key 'k'", "keys: none"]),
        ("$steps.fetch.rows.5", ["$steps.fetch.rows.5", "index 5", "$steps.fetch.rows"]),
        ("$steps.scalar.x", ["cannot look up 'x' in $steps.scalar", "a number"]),
        ("$steps.null_output.a", ["cannot look up 'a' in $steps.null_output", "null"]),
    ],
)
def test_walking_off_the_data_is_a_clear_step_input_error(scope, text, fragments):
    with pytest.raises(StepInputError) as info:
        scope.resolve({"arg": [text]})
    message = str(info.value)
    assert message.startswith(text + ":")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("segment", [" 1", "+1", "1_0", "\u0663", "1.0", "0x1", "1e0", "--1"])
def test_list_index_segments_are_strict_ascii_integers(segment):
    data = {"l": list(range(20))}
    with pytest.raises(StepInputError, match="is not a list index"):
        walk(data, ("l", segment), f"$input.l.{segment}")


def test_list_index_leading_zero_and_huge_index():
    data = {"l": [0, 1, 2]}
    assert walk(data, ("l", "01"), "$input.l.01") == 1
    with pytest.raises(StepInputError):
        walk(data, ("l", "9" * 30), "$input.l.999")


def test_keys_listed_in_error_are_capped():
    data = {f"k{i:02d}": i for i in range(30)}
    with pytest.raises(StepInputError) as info:
        walk(data, ("zz",), "$input.zz")
    assert "k00" in str(info.value)
    assert "k29" not in str(info.value)
    assert "..." in str(info.value)


def test_invalid_reference_in_resolve_is_a_step_input_error(scope):
    with pytest.raises(StepInputError, match="is not a reference"):
        scope.resolve({"a": "$nope"})


def test_resolve_too_deep_is_a_step_input_error(scope):
    deep: object = "$input.user.id"
    for _ in range(MAX_NESTING + 10):
        deep = [deep]
    with pytest.raises(StepInputError, match="nested deeper"):
        scope.resolve(deep)
    ok: object = "$input.user.id"
    for _ in range(MAX_NESTING - 1):
        ok = [ok]
    resolved = scope.resolve(ok)
    for _ in range(MAX_NESTING - 1):
        resolved = resolved[0]
    assert resolved == 7


def test_references_only_read_keys_never_python_attributes():
    # A path segment is a key: `__class__` is looked up as a key, not an attribute.
    with pytest.raises(StepInputError, match="no key '__class__'"):
        Scope({"a": 1}, {}).resolve("$input.__class__")
    assert Scope({"__class__": "x"}, {}).resolve("$input.__class__") == "x"
    with pytest.raises(StepInputError, match="cannot look up 'real'"):
        Scope({"n": 1}, {}).resolve("$input.n.real")
