"""JSON Schemas of the data a flow passes around: its input, tools' outputs and parameters.

A flow's `input:` block is a JSON Schema of the input object (what a `@flow` signature
turns into); tools' outputs and parameters get theirs from their annotations. These
helpers check an input against its schema and answer, before a run, what a reference
path leads to and whether a value of one schema can fit a parameter of another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from pydantic import TypeAdapter

from executor.model.references import LIST_INDEX

Schema = dict[str, Any]
# The JSON types a value of a schema may have; None means any.
Types = frozenset[str] | None
_ALL_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


def type_schema(annotation: Any, mode: str = "validation") -> Schema | None:
    """The JSON Schema of an annotation (None when pydantic cannot describe it)."""
    try:
        schema = TypeAdapter(annotation).json_schema(mode=mode, by_alias=False)  # type: ignore[arg-type]
    except Exception:  # an arbitrary class pydantic only checks with isinstance
        return None
    return strip_titles(schema)


def strip_titles(schema: Any) -> Any:
    """A schema without `title` keys: pydantic adds one per field, noise in a flow file."""
    if isinstance(schema, list):
        return [strip_titles(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "patternProperties") and isinstance(value, dict):
            out[key] = {k: strip_titles(v) for k, v in value.items()}
        elif key in ("default", "const", "enum", "examples"):
            out[key] = value  # data, not schema
        else:
            out[key] = strip_titles(value)
    return out


def check_schema(schema: Any) -> list[str]:
    """Problems with a flow's `input:` block as a JSON Schema (Draft 2020-12)."""
    if not isinstance(schema, dict):
        return ["input: the schema must be a mapping (a JSON Schema of the input object)"]
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return [f"input: not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"]
    return []


def with_defaults(schema: Schema | None, data: Any) -> Any:
    """The input with the schema's top-level defaults filled in where a field is absent."""
    if not schema or not isinstance(data, dict):
        return data
    props = schema.get("properties")
    if not isinstance(props, dict):
        return data
    filled = dict(data)
    for name, sub in props.items():
        if name not in filled and isinstance(sub, dict) and "default" in sub:
            filled[name] = sub["default"]
    return filled


def input_problems(schema: Schema, data: Any) -> list[str]:
    """Every way the input does not fit the flow's input schema, a line each."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in err.absolute_path)
        problems.append(f"input{'.' + where if where else ''}: {_message(err)}")
    return problems[:20]


def _message(err: jsonschema.ValidationError) -> str:
    # jsonschema repeats the whole offending value; keep the line short.
    if err.validator == "type":
        return f"expected {err.validator_value}, got {_json_type(err.instance)}"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties") or {})
        extra = [k for k in err.instance if k not in known]
        names = ", ".join(repr(k) for k in extra)
        return f"unknown field{'s' if len(extra) > 1 else ''} {names} (fields: {', '.join(known)})"
    return err.message if len(err.message) <= 200 else err.message[:200] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class MissingField(Exception):
    """A reference path names a field the schema's object does not have."""

    def __init__(self, field: str, fields: list[str], kind: str = "not an object") -> None:
        super().__init__(field)
        self.field = field
        self.fields = fields
        self.kind = kind


def follow(root: Schema, schema: Schema | None, path: tuple[str, ...]) -> Schema | None:
    """The schema of the value at `path` inside a value of `schema` (None: unknown).

    `root` holds the `$defs` that `$ref`s point to.

    Raises:
        MissingField: a step of the path names a field a closed object lacks (a pydantic
            model's fields), or indexes something that cannot be indexed.
    """
    for part in path:
        schema = resolve(root, schema)
        if schema is None:
            return None
        if "anyOf" in schema or "oneOf" in schema:
            # Optional[Model] and unions: follow into the members that can hold the part.
            members = [resolve(root, m) for m in schema.get("anyOf") or schema.get("oneOf") or []]
            held = [m for m in members if m is not None and m.get("type") != "null"]
            if len(held) != 1:
                return None
            schema = held[0]
        types = types_of(root, schema)
        if LIST_INDEX.match(part) and types is not None and "array" in types:
            schema = _item_schema(schema, int(part))
            continue
        if types is not None and "object" not in types:
            raise MissingField(str(part), [], a_kind(types))
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if isinstance(props, dict) and str(part) in props:
            schema = props[str(part)]
        elif isinstance(extra, dict):
            schema = extra
        elif isinstance(props, dict) and extra is not True:
            # A pydantic model (closed unless extra='allow'): a typo, not data.
            raise MissingField(str(part), list(props))
        else:
            return None
    return resolve(root, schema)


def _item_schema(schema: Schema, index: int) -> Schema | None:
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list) and 0 <= index < len(prefix):
        return prefix[index]
    items = schema.get("items")
    return items if isinstance(items, dict) else None


def item_schema(root: Schema, schema: Schema | None) -> Schema | None:
    """The schema of one item of a list schema (what `$item` is in a map step)."""
    schema = resolve(root, schema)
    if schema is None:
        return None
    return _item_schema(schema, 1 << 30)


def resolve(root: Schema, schema: Schema | None) -> Schema | None:
    """Follow a local `$ref` (`#/$defs/Name`); None when it leads nowhere."""
    for _ in range(32):  # a chain of refs, never a loop
        if not isinstance(schema, dict):
            return None
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema
        if not ref.startswith("#/"):
            return None
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key) if isinstance(target, dict) else None
        schema = target
    return None


def types_of(root: Schema, schema: Schema | None) -> Types:
    """The JSON types a value of the schema can have (None: any)."""
    schema = resolve(root, schema)
    if schema is None:
        return None
    if "const" in schema:
        return frozenset({_json_type(schema["const"])})
    if isinstance(schema.get("enum"), list):
        return frozenset(_json_type(v) for v in schema["enum"])
    members = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(members, list):
        found: set[str] = set()
        for m in members:
            t = types_of(root, m)
            if t is None:
                return None
            found |= t
        return frozenset(found)
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(str(t) for t in declared)
    return None


def cannot_fit(produced: Types, expected: Types) -> bool:
    """Whether no value of the produced types can be valid for the expected ones."""
    if produced is None or expected is None or not produced or not expected:
        return False
    widened = set(produced)
    if "integer" in widened:
        widened.add("number")  # 3 is a valid float
    if "number" in widened:
        widened.add("integer")  # 3.0 is a valid int
    return not (widened & expected)


def describe(types: Types) -> str:
    """`string`, `integer or null`: how a message names a set of JSON types."""
    if types is None:
        return "any"
    order = [t for t in sorted(_ALL_TYPES) if t in types]
    return " or ".join(order) or "nothing"


def a_kind(types: Types) -> str:
    """`a string`, `an integer or null`: `describe` with its article."""
    text = describe(types)
    return ("an " if text[0] in "aeiou" else "a ") + text


def properties(schema: Mapping[str, Any] | None) -> list[str]:
    """The field names of an object schema (empty when it has none)."""
    props = schema.get("properties") if schema else None
    return list(props) if isinstance(props, dict) else []
