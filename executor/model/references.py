"""References in step inputs: `$input.a`, `$steps.<id>.b.0`, `$item`, `$index`, `$$literal`."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from executor.errors import StepInputError

# `\Z`, not `$`: `$` also matches before a trailing newline, letting "a\n" through.
STEP_ID = re.compile(r"\A[A-Za-z_][A-Za-z0-9_\-]*\Z")
LIST_INDEX = re.compile(r"\A-?[0-9]{1,18}\Z")  # ASCII digits only: not " 1", "+1", "1_0", "٣"
MAX_NESTING = 200
"""How deep a step's inputs (or a flow's output) may nest lists and mappings."""
Root = Literal["input", "steps", "item", "index"]
_ROOTS = ("input", "steps", "item", "index")


class ReferenceSyntaxError(ValueError):
    """A `$...` string that is not a valid reference."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference: its root, the step it names (for `steps`) and a key path."""

    text: str
    root: Root
    step: str | None
    path: tuple[str, ...]


@functools.lru_cache(maxsize=8192)
def parse_ref(text: str) -> Ref:
    """Parse a string starting with a single `$` into a `Ref`.

    Raises:
        ReferenceSyntaxError: the text is not one of the reference forms.
    """
    parts = text[1:].split(".")
    root = parts[0]
    if root not in _ROOTS:
        raise ReferenceSyntaxError(
            f"{text!r} is not a reference (use $input, $steps.<id>, $item, $index, "
            "or $$ for a literal '$')"
        )
    if any(p == "" for p in parts[1:]):
        raise ReferenceSyntaxError(f"{text!r} has an empty path segment")
    if root == "steps":
        if len(parts) < 2:
            raise ReferenceSyntaxError(f"{text!r} must name a step: $steps.<id>")
        if not STEP_ID.match(parts[1]):
            raise ReferenceSyntaxError(f"{text!r} names an invalid step id {parts[1]!r}")
        return Ref(text, "steps", parts[1], tuple(parts[2:]))
    if root == "index" and len(parts) > 1:
        raise ReferenceSyntaxError(f"{text!r}: $index is a number and has no fields")
    return Ref(text, root, None, tuple(parts[1:]))  # type: ignore[arg-type]


def is_ref(value: object) -> bool:
    """Whether a value is a reference string (not a `$$` literal)."""
    return isinstance(value, str) and value.startswith("$") and not value.startswith("$$")


def iter_refs(value: Any) -> Iterator[str]:
    """Every reference string inside a (nested) input value, in document order.

    Raises:
        ReferenceSyntaxError: the value nests deeper than `MAX_NESTING` levels (or
            contains itself); walked with an explicit stack, so never a RecursionError.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if is_ref(v):
                yield v
            continue
        if isinstance(v, Mapping):
            children = list(v.values())
        elif isinstance(v, list | tuple):
            children = list(v)
        else:
            continue
        if depth >= MAX_NESTING:
            raise ReferenceSyntaxError(f"nested deeper than {MAX_NESTING} levels")
        stack.extend((c, depth + 1) for c in reversed(children))


def json_kind(value: Any) -> str:
    """The JSON name of a value's type, for messages (`null`, `string`, `object`...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def walk(data: Any, path: tuple[str, ...], text: str) -> Any:
    """Follow a key path into JSON data; integer segments index lists (negative from the end).

    Args:
        text: the reference, for messages; its prefix before `path` names the start.
    Raises:
        StepInputError: a key is missing or a segment does not fit the data; the
            message names the reference, the failing segment and where it was looked up.
    """
    if not path:  # `$steps.<id>`, `$input`: the common case, nothing to walk
        return data
    base = text.rsplit(".", len(path))[0]
    for i, key in enumerate(path):
        where = ".".join((base, *path[:i]))
        if isinstance(data, Mapping):
            if key not in data:
                names = sorted(map(str, data))
                known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
                raise StepInputError(f"{text}: no key {key!r} in {where} (keys: {known or 'none'})")
            data = data[key]
        elif isinstance(data, list | tuple):
            if not LIST_INDEX.match(key):
                raise StepInputError(
                    f"{text}: {key!r} is not a list index ({where} is a list of {len(data)})"
                )
            index = int(key)
            if not -len(data) <= index < len(data):
                raise StepInputError(
                    f"{text}: index {index} is out of range ({where} is a list of {len(data)})"
                )
            data = data[index]
        else:
            raise StepInputError(f"{text}: cannot look up {key!r} in {where}, a {json_kind(data)}")
    return data


_SCALARS = frozenset({int, float, bool, type(None)})


@dataclass(slots=True)
class Scope:
    """What references resolve against: the run input, finished outputs, a map item.

    `outputs` holds the outputs of succeeded steps only; a reference to any other step
    resolves to None (that is how a join after a skipped branch sees it).
    """

    input: Any
    outputs: Mapping[str, Any]
    item: Any = None
    index: int | None = None
    in_map: bool = False

    def lookup(self, ref: Ref) -> Any:
        if ref.root == "input":
            return walk(self.input, ref.path, ref.text)
        if ref.root == "steps":
            assert ref.step is not None
            if ref.step not in self.outputs:
                return None
            return walk(self.outputs[ref.step], ref.path, ref.text)
        if not self.in_map:
            raise StepInputError(f"{ref.text} is only available in a map step")
        if ref.root == "index":
            return self.index
        return walk(self.item, ref.path, ref.text)

    def resolve(self, value: Any) -> Any:
        """Resolve every reference inside a (nested) value; other values stay literal.

        Raises:
            StepInputError: a reference does not fit the data, is not a valid
                reference, or the value nests deeper than `MAX_NESTING` levels.
        """
        return self._resolve(value, 0)

    def _resolve(self, value: Any, depth: int) -> Any:
        kind = type(value)  # exact types first: this runs for every input of every step
        if kind is str:
            return self._resolve_str(value) if value.startswith("$") else value
        if kind in _SCALARS:
            return value
        # Plain dicts and lists before the (slower) abstract-class checks below.
        is_dict = kind is dict or isinstance(value, Mapping)
        if is_dict or kind is list or isinstance(value, list | tuple):
            if depth >= MAX_NESTING:
                raise StepInputError(f"inputs nested deeper than {MAX_NESTING} levels")
            # Loops, not comprehensions, and literal leaves kept in place: no function
            # call per plain value (a comprehension is one in Python 3.11).
            depth += 1
            if is_dict:
                out: dict[Any, Any] = {}
                for k, v in value.items():
                    t = type(v)
                    if t is str:
                        out[k] = self._resolve_str(v) if v.startswith("$") else v
                    else:
                        out[k] = v if t in _SCALARS else self._resolve(v, depth)
                return out
            items: list[Any] = []
            for v in value:
                t = type(v)
                if t is str:
                    items.append(self._resolve_str(v) if v.startswith("$") else v)
                else:
                    items.append(v if t in _SCALARS else self._resolve(v, depth))
            return items
        if isinstance(value, str):  # a str subclass
            return self._resolve(str(value), depth)
        return value

    def _resolve_str(self, value: str) -> Any:
        """A string starting with `$`: a reference's value, or a `$$` literal."""
        if value.startswith("$$"):
            return value[1:]
        try:
            ref = parse_ref(value)
        except ReferenceSyntaxError as exc:
            raise StepInputError(str(exc)) from None
        return self.lookup(ref)
