"""`when` conditions: a tiny expression language over JSON data, parsed to a whitelisted AST.

Nothing here calls `eval`: the expression is parsed with `ast.parse`, every node is
checked against a whitelist once at validation, and a small interpreter walks it.
Attribute access is a key lookup on JSON data, so no Python attribute is ever reached.

A step that did not succeed has the output None, and None propagates: its fields,
arithmetic on it and `len()` of it are None, an ordering comparison (`<`, `>`...) or
`in` with None is False. So `steps.a.score > 0.5` is simply false when `a` was skipped.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from executor.model.references import LIST_INDEX, STEP_ID

MAX_LENGTH = 2000
MAX_NODES = 400
MAX_INT_DIGITS = 100
MAX_INT_BITS = 4096  # arithmetic results beyond this are refused (no huge allocations)
NAMES = ("input", "steps", "item", "index")


class PredicateError(ValueError):
    """A `when` expression that is not allowed or cannot be evaluated."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
# Arithmetic is on numbers only: no `**` (huge powers) and no string/list repetition.
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"len": len}
_NODE_NAMES = {
    "JoinedStr": "an f-string",
    "FormattedValue": "an f-string",
    "Lambda": "lambda",
    "ListComp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
    "GeneratorExp": "a generator expression",
    "IfExp": "a conditional expression (x if c else y)",
    "NamedExpr": "an assignment (:=)",
    "Await": "await",
    "Yield": "yield",
    "YieldFrom": "yield",
    "Starred": "* unpacking",
    "Dict": "a dict literal",
    "Set": "a set literal",
    "Slice": "a slice",
}


@dataclass(frozen=True, slots=True)
class Predicate:
    """A checked `when` expression and the steps it reads."""

    source: str
    tree: ast.Expression
    steps: frozenset[str]

    def evaluate(
        self, input: Any, steps: Mapping[str, Any], item: Any = None, index: int | None = None
    ) -> bool:
        """Evaluate against JSON data; `steps` maps step ids to outputs (None if not run).

        Raises:
            PredicateError: the data does not fit the expression (a missing key, a
                comparison of incomparable values).
        """
        env = {"input": input, "steps": steps, "item": item, "index": index}
        try:
            return bool(_eval(self.tree.body, env))
        except PredicateError as exc:
            raise PredicateError(f"when {_short(self.source)}: {exc}") from None
        except (TypeError, ZeroDivisionError, ValueError, OverflowError) as exc:
            raise PredicateError(f"when {_short(self.source)}: {exc}") from None


def parse_predicate(source: str) -> Predicate:
    """Parse and check a `when` expression.

    Raises:
        PredicateError: it is not valid syntax or uses anything outside the whitelist.
    """
    if not isinstance(source, str) or not source.strip():
        raise PredicateError("when must be a non-empty expression")
    if len(source) > MAX_LENGTH:
        raise PredicateError(f"when is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        msg = getattr(exc, "msg", None) or type(exc).__name__
        raise PredicateError(f"when {_short(source)} is not a valid expression: {msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise PredicateError(
            f"when {_short(source)} is too complex ({len(nodes)} nodes, at most {MAX_NODES})"
        )
    steps: set[str] = set()
    for node in nodes:
        _check(node, source, steps)
    return Predicate(source, tree, frozenset(steps))


def _check(node: ast.AST, source: str, steps: set[str]) -> None:
    def bad(what: str) -> PredicateError:
        return PredicateError(f"when {_short(source)}: {what} is not allowed")

    match node:
        case ast.Expression() | ast.BoolOp(op=ast.And() | ast.Or()) | ast.Compare():
            pass
        case ast.And() | ast.Or() | ast.Not() | ast.USub() | ast.UAdd() | ast.Load():
            pass
        case ast.cmpop():
            pass
        case ast.UnaryOp(op=ast.Not()):
            pass
        case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
            if not _may_be_number(operand):
                raise bad("arithmetic on something other than a number")
        case ast.BinOp(op=op, left=left, right=right):
            if type(op) not in _ARITH:
                raise bad(f"the operator {type(op).__name__}")
            if not (_may_be_number(left) and _may_be_number(right)):
                raise bad("arithmetic on something other than numbers")
        case ast.operator():
            if type(node) not in _ARITH:
                raise bad(f"the operator {type(node).__name__}")
        case ast.Constant(value=value):
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and (len(str(abs(value))) > MAX_INT_DIGITS)
            ):
                raise bad("an integer this large")
            if not (value is None or isinstance(value, bool | int | float | str)):
                raise bad(f"a {type(value).__name__} constant")
        case ast.List() | ast.Tuple():
            pass
        case ast.Name(id=name):
            if name not in NAMES and name not in _FUNCTIONS:
                raise bad(f"the name {name!r} (use input, steps, item, index)")
        case ast.Attribute(value=value, attr=attr):
            if attr.startswith("_"):
                raise bad(f"the attribute {attr!r}")
            if isinstance(value, ast.Name) and value.id == "steps":
                if not STEP_ID.match(attr):
                    raise bad(f"the step id {attr!r}")
                steps.add(attr)
        case ast.Subscript(value=value, slice=index):
            key = _constant_key(index)
            if key is None:
                raise bad("a subscript other than a constant string or integer")
            if isinstance(value, ast.Name) and value.id == "steps":
                if not (isinstance(key, str) and STEP_ID.match(key)):
                    raise bad(f"steps[{key!r}] (not a step id)")
                steps.add(key)
        case ast.Call(func=func, args=args, keywords=keywords):
            if not (isinstance(func, ast.Name) and func.id in _FUNCTIONS):
                raise bad("a call other than len()")
            if keywords or len(args) != 1:
                raise bad("len() with other than one argument")
        case _:
            name = type(node).__name__
            raise bad(_NODE_NAMES.get(name, name))
    # `steps` alone (e.g. len(steps)) would read every step: it must name one.
    for child in ast.iter_child_nodes(node):
        if (
            isinstance(child, ast.Name)
            and child.id == "steps"
            and not isinstance(node, ast.Attribute | ast.Subscript)
        ):
            raise PredicateError(f"when {_short(source)}: use steps.<id>, not steps alone")
    for child in ast.iter_child_nodes(node):
        if (
            isinstance(child, ast.Name)
            and child.id in _FUNCTIONS
            and not (isinstance(node, ast.Call) and node.func is child)
        ):
            raise PredicateError(f"when {_short(source)}: {child.id} can only be called")
    if (
        isinstance(node, ast.Expression)
        and isinstance(node.body, ast.Name)
        and (node.body.id == "steps" or node.body.id in _FUNCTIONS)
    ):
        raise PredicateError(f"when {_short(source)}: {node.body.id} alone is not a condition")


def _lookup(data: Any, key: Any) -> Any:
    if data is None:
        return None  # a step that did not run has no output: its fields are None too
    if isinstance(data, Mapping):
        if key not in data:
            raise PredicateError(f"no key {key!r}")
        return data[key]
    if isinstance(data, list) and isinstance(key, int) and not isinstance(key, bool):
        if not -len(data) <= key < len(data):
            raise PredicateError(f"index {key} out of range")
        return data[key]
    if isinstance(data, list) and isinstance(key, str) and LIST_INDEX.match(key):
        return _lookup(data, int(key))
    raise PredicateError(f"cannot look up {key!r} in {_kind(data)}")


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Name(id=name) if name in env:
            return env[name]
        case ast.Attribute(value=value, attr=attr) if not attr.startswith("_"):
            base = _eval(value, env)
            if isinstance(value, ast.Name) and value.id == "steps":
                return base.get(attr)
            return _lookup(base, attr)
        case ast.Subscript(value=value, slice=index):
            base = _eval(value, env)
            key = _eval(index, env)
            if isinstance(value, ast.Name) and value.id == "steps":
                return base.get(key)
            return _lookup(base, key)
        case ast.BoolOp(op=ast.And(), values=values):
            result: Any = True
            for v in values:
                result = _eval(v, env)
                if not result:
                    return result
            return result
        case ast.BoolOp(op=ast.Or(), values=values):
            result = False
            for v in values:
                result = _eval(v, env)
                if result:
                    return result
            return result
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not _eval(operand, env)
        case ast.UnaryOp(op=ast.USub() | ast.UAdd() as op, operand=operand):
            value = _eval(operand, env)
            if value is None:
                return None
            return -_number(value) if isinstance(op, ast.USub) else +_number(value)
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _eval(left, env), _eval(right, env)
            if a is None or b is None:
                return None
            return _bounded(_ARITH[type(op)](_number(a), _number(b)))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            a = _eval(left, env)
            for cmp, comp in zip(ops, comparators, strict=True):
                b = _eval(comp, env)
                if not _compare(type(cmp), a, b):
                    return False
                a = b
            return True
        case ast.List(elts=elts) | ast.Tuple(elts=elts):
            return [_eval(e, env) for e in elts]
        case ast.Call(func=ast.Name(id=name), args=[arg], keywords=[]) if name in _FUNCTIONS:
            value = _eval(arg, env)
            return None if value is None else _FUNCTIONS[name](value)
    raise PredicateError(f"cannot evaluate {type(node).__name__}")  # unreachable once checked


_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _compare(op: type[ast.cmpop], a: Any, b: Any) -> bool:
    if a is None or b is None:
        if op in _ORDERING:
            return False  # a missing value is neither smaller nor larger than anything
        if op is ast.In or op is ast.NotIn:
            try:
                return bool(_COMPARE[op](a, b))
            except TypeError:  # None in a string, or anything in None
                return op is ast.NotIn
    return bool(_COMPARE[op](a, b))


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PredicateError(f"arithmetic needs numbers, got {_kind(value)}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise PredicateError("a number too large for arithmetic")
    return value


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise PredicateError("the result of the arithmetic is too large")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _may_be_number(node: ast.AST) -> bool:
    """False for operands that are certainly not numbers: strings, lists, booleans..."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    return not isinstance(node, ast.List | ast.Tuple | ast.Compare | ast.BoolOp) and not (
        isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
    )


def _constant_key(node: ast.AST) -> str | int | None:
    """The key of a constant subscript (`x['a']`, `x[0]`, `x[-1]`), else None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
        if not (isinstance(node, ast.Constant) and type(node.value) is int):
            return None
    if not isinstance(node, ast.Constant):
        return None
    if type(node.value) is int:
        return sign * node.value
    if isinstance(node.value, str):
        return node.value
    return None


def _short(source: str, limit: int = 80) -> str:
    """A predicate's source for messages: quoted, and cut if long."""
    return repr(source if len(source) <= limit else source[: limit - 3] + "...")
