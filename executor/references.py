"""References in step inputs: `$input.a`, `$steps.<id>.b.0`, `$item`, `$index`, `$$literal`."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from executor.errors import StepInputError

STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
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
    """Every reference string inside a (nested) input value."""
    if isinstance(value, str):
        if is_ref(value):
            yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from iter_refs(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_refs(v)


def walk(data: Any, path: tuple[str, ...], text: str) -> Any:
    """Follow a key path into JSON data; integer segments index lists.

    Raises:
        StepInputError: a key is missing or a segment does not fit the data.
    """
    for i, key in enumerate(path):
        where = ".".join(path[:i]) or "<root>"
        if isinstance(data, Mapping):
            if key not in data:
                known = ", ".join(sorted(map(str, data))[:10])
                raise StepInputError(f"{text}: no key {key!r} at {where} (keys: {known})")
            data = data[key]
        elif isinstance(data, list):
            try:
                index = int(key)
            except ValueError:
                raise StepInputError(f"{text}: {key!r} at {where} is not a list index") from None
            if not -len(data) <= index < len(data):
                raise StepInputError(
                    f"{text}: index {index} at {where} is out of range (length {len(data)})"
                )
            data = data[index]
        else:
            raise StepInputError(
                f"{text}: cannot look up {key!r} in a {type(data).__name__} at {where}"
            )
    return data


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
        """Resolve every reference inside a (nested) value; other values stay literal."""
        if isinstance(value, str):
            if value.startswith("$$"):
                return value[1:]
            if value.startswith("$"):
                return self.lookup(parse_ref(value))
            return value
        if isinstance(value, Mapping):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.resolve(v) for v in value]
        return value
