"""Flow files: YAML and JSON read into a flow and written back, with limits.

The limits make a bad file cost nothing, and every failure becomes one
`FlowValidationError` naming the file and the problem, so no parser traceback reaches
the user. YAML is read by `executor.model.yaml_limits`, which stops a hostile file while it
composes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import ValidationError

from executor.errors import FlowValidationError
from executor.model.spec import FlowSpec
from executor.model.yaml_limits import MAX_DEPTH, MAX_NODES, load_yaml

# MAX_DEPTH and MAX_NODES belong to the YAML loader, which must enforce them while it
# composes; JSON flows are held to the same two here, beside these.
MAX_BYTES = 1024 * 1024
MAX_STEPS = 2000
MAX_STRING = 64 * 1024

Format = Literal["yaml", "json"]
F = TypeVar("F", bound=FlowSpec)


def load_flow_file(path: str | Path, into: type[F]) -> F:
    """Read a `.yaml`, `.yml` or `.json` flow file (other names are tried as YAML) into
    the flow class `into`.

    Raises:
        FlowValidationError: one, naming the file and what is wrong with it.
    """
    p = Path(path)
    source = str(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise FlowValidationError("no such file", source) from None
    except IsADirectoryError:
        raise FlowValidationError("is a directory, not a flow file", source) from None
    except OSError as exc:
        raise FlowValidationError(f"cannot read: {exc.strerror or exc}", source) from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise FlowValidationError(f"invalid path: {exc}", source) from None
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    return parse_flow(data, fmt, source, into)


def parse_flow(text: str | bytes, fmt: Format, source: str | None, into: type[F]) -> F:
    """Parse flow text in the given format, within the limits, into the flow class `into`."""
    source = source or f"<{fmt}>"
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FlowValidationError(
                f"not valid Unicode text (character {exc.start + 1})", source
            ) from None
    else:
        raw = bytes(text)
    if len(raw) > MAX_BYTES:
        raise FlowValidationError(f"file is larger than the {MAX_BYTES // 1024} KiB limit", source)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlowValidationError(f"not UTF-8 text (byte {exc.start})", source) from None
    decoded = decoded.removeprefix("\ufeff")  # a byte order mark is not content
    if not decoded.strip():
        raise FlowValidationError("file is empty", source)
    data = _parse_json(decoded, source) if fmt == "json" else load_yaml(decoded, source)
    if data is None:
        raise FlowValidationError("the document is empty: no flow in it", source)
    if not isinstance(data, dict):
        raise FlowValidationError(
            f"a flow must be a mapping with name and steps, not a {_kind(data)}", source
        )
    _check_shape(data, source)
    try:
        return into.model_validate(data)
    except ValidationError as exc:
        raise FlowValidationError(_pydantic_problems(exc, data), source) from None


def dump_flow(flow: FlowSpec, fmt: Format) -> str:
    """Serialize a flow so that `parse_flow` reads back an equal one."""
    data = flow.model_dump(mode="json", exclude_defaults=True)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that double-quotes strings holding U+0085 (NEL).

    PyYAML writes NEL raw inside single quotes, where it reads back as a line break:
    the double-quoted style escapes it (`\\N`), so the string round-trips.
    """


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if "\x85" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except _DuplicateKey as exc:
        raise FlowValidationError(f"invalid JSON: duplicate key {exc.args[0]!r}", source) from None
    except json.JSONDecodeError as exc:
        raise FlowValidationError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source
        ) from None
    except RecursionError:
        raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise FlowValidationError(f"invalid JSON: {exc}", source) from None


class _DuplicateKey(Exception):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _check_shape(data: dict[str, Any], source: str) -> None:
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_STEPS:
        raise FlowValidationError(
            f"{len(steps)} steps is more than the {MAX_STEPS}-step limit for flow files",
            source,
        )
    # Walk with an explicit stack: depth and string limits without recursion.
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise FlowValidationError(
                f"more than {MAX_NODES} values, the limit for flow files", source
            )
        if depth > MAX_DEPTH:
            raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source)
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise FlowValidationError(
                f"a string of {len(value)} characters is over the {MAX_STRING} limit", source
            )
        if isinstance(value, dict):
            seen += len(value)  # the keys
            for k, v in value.items():
                if not isinstance(k, str):
                    raise FlowValidationError(f"key {k!r} is not a string", source)
                if len(k) > MAX_STRING:
                    raise FlowValidationError(
                        f"a key of {len(k)} characters is over the {MAX_STRING} limit", source
                    )
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _pydantic_problems(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    problems = []
    steps = data.get("steps")
    for err in exc.errors(include_url=False)[:20]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        # Name the step by its id too: "steps.3.tiemout (step 'fetch')".
        if len(err["loc"]) > 1 and err["loc"][0] == "steps" and isinstance(steps, list):
            i = err["loc"][1]
            if isinstance(i, int) and 0 <= i < len(steps) and isinstance(steps[i], dict):
                sid = steps[i].get("id")
                if isinstance(sid, str):
                    loc += f" (step {sid[:100]!r})"
        problems.append(f"{loc}: {msg}" if loc else msg)
    if exc.error_count() > 20:
        problems.append(f"... and {exc.error_count() - 20} more")
    return problems


def _kind(value: Any) -> str:
    return {
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)
