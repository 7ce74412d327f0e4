"""Flow files: YAML (safe_load) and JSON, with limits so a bad file costs nothing.

Every failure becomes one `FlowValidationError` naming the file and the problem; no
parser traceback reaches the user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from executor.errors import FlowValidationError
from executor.flow import Flow

MAX_BYTES = 1024 * 1024
MAX_STEPS = 2000
MAX_DEPTH = 32
MAX_NODES = 200_000
MAX_STRING = 64 * 1024

Format = Literal["yaml", "json"]


def load_flow_file(path: str | Path) -> Flow:
    """Read a `.yaml`, `.yml` or `.json` flow file (other names are tried as YAML)."""
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
    fmt: Format = "json" if p.suffix.lower() == ".json" else "yaml"
    return parse_flow(data, fmt, source)


def parse_flow(text: str | bytes, fmt: Format, source: str | None = None) -> Flow:
    """Parse flow text in the given format, within the limits."""
    source = source or f"<{fmt}>"
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise FlowValidationError(f"file is larger than the {MAX_BYTES // 1024} KiB limit", source)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlowValidationError(f"not UTF-8 text (byte {exc.start})", source) from None
    if not decoded.strip():
        raise FlowValidationError("file is empty", source)
    data = _parse_json(decoded, source) if fmt == "json" else _parse_yaml(decoded, source)
    if not isinstance(data, dict):
        raise FlowValidationError(
            f"a flow must be a mapping with name and steps, not a {_kind(data)}", source
        )
    _check_shape(data, source)
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowValidationError(_pydantic_problems(exc), source) from None


def dump_flow(flow: Flow, fmt: Format) -> str:
    """Serialize a flow so that `parse_flow` reads back an equal one."""
    data = flow.model_dump(mode="json", exclude_defaults=True)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlowValidationError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source
        ) from None
    except RecursionError:
        raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source) from None


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except _TooLarge as exc:
        raise FlowValidationError(str(exc), source) from None
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1} column {exc.problem_mark.column + 1}"
        problem = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = problem.replace(
                "could not determine a constructor for the tag", "unsupported YAML tag"
            )
        raise FlowValidationError(f"invalid YAML{where}: {problem}", source) from None
    except yaml.YAMLError as exc:
        raise FlowValidationError(f"invalid YAML: {exc}", source) from None
    except RecursionError:
        raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source) from None


class _TooLarge(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts nodes as aliases expand them, stopping alias bombs early."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            # An alias repeats its anchor's whole subtree: charge that subtree again.
            node = super().compose_node(parent, index)
            if node is not None:
                self._charge(self._size(node))
            return node
        node = super().compose_node(parent, index)
        self._charge(1)
        return node

    def _charge(self, n: int) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            raise _TooLarge(f"expands to more than {MAX_NODES} values (a YAML alias bomb?)")

    def _size(self, node: yaml.Node) -> int:
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(v) for v in node.value)
            else:
                size = 1
            self._sizes[key] = size
        return self._sizes[key]


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
            raise FlowValidationError(f"more than {MAX_NODES} values", source)
        if depth > MAX_DEPTH:
            raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source)
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise FlowValidationError(
                f"a string of {len(value)} characters is over the {MAX_STRING} limit", source
            )
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise FlowValidationError(f"key {k!r} is not a string", source)
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False)[:20]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
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
