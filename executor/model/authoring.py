"""Flows written in Python: `@flow` turns a function that calls tools into a `Flow`.

The decorated function runs once, when it is decorated, with a typed reference for each
parameter: each tool call in its body adds a step and hands back a reference to that
step's output, and what it returns becomes the flow's output. Attribute access and
indexing on a reference are checked against the producer's type right there, so a
typo is an error naming the tool and the field, not a failed run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import to_jsonable_python

from executor.errors import DagrelayError, FlowValidationError
from executor.model import building
from executor.model import schema as js
from executor.model.flow import Flow
from executor.model.references import STEP_ID
from executor.model.spec import OnFailure, Step
from executor.model.tools import Tool, import_module
from executor.model.typecheck import Typed, fit_problem, missing_text, tool_output
from executor.model.validation import validate_flow

STEP_OPTIONS = ("id", "retry", "timeout", "when", "trigger", "queue", "depends_on", "description")


class Ref:
    """A typed reference to a value the run will have: the flow's input, a step's output.

    `ref.field` and `ref[0]` are references too, checked against the type when known.
    A reference has no value while the flow is built: it cannot be tested or iterated.
    """

    __slots__ = ("_step", "_text", "_typed", "_what")

    def __init__(self, text: str, typed: Typed | None, what: str, step: str | None) -> None:
        self._text = text
        self._typed = typed
        self._what = what  # "step 'user' (tool 'fetch_user')": for messages
        self._step = step

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: int | str) -> Ref:
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise FlowValidationError(
                f"{self._text}[{key!r}]: index a reference with an int or a str"
            )
        return self._child(str(key))

    def _child(self, part: str) -> Ref:
        if not part or "." in part:
            raise FlowValidationError(f"{self._text}: {part!r} cannot be a field of a reference")
        typed = self._typed
        if typed is not None:
            try:
                typed = (typed[0], js.follow(typed[0], typed[1], (part,)))
            except js.MissingField as exc:
                raise FlowValidationError(
                    f"{self._text}.{part}: {self._what} {missing_text(exc)}"
                ) from None
        return Ref(f"{self._text}.{part}", typed, f"{self._what}.{part}", self._step)

    def __iter__(self) -> Any:
        raise TypeError(
            f"{self._text} has no value while the flow is built: to call a tool per item, "
            "use tool.map(...)"
        )

    def __bool__(self) -> bool:
        raise TypeError(
            f"{self._text} has no value while the flow is built: for a condition, give "
            "the step when=... (e.g. tool.options(when='steps.check.ok')(...))"
        )

    def __repr__(self) -> str:
        return f"<Ref {self._text}>"


#: In `tool.map(...)` inputs: the item the call is for (`$item`), and its position.
item = Ref("$item", None, "the map item", None)
index = Ref("$index", ({}, {"type": "integer"}), "$index", None)


class _Builder:
    """The steps a `@flow` body has added so far."""

    def __init__(self, flow_name: str) -> None:
        self.flow_name = flow_name
        self.steps: list[Step] = []
        self.taken: set[str] = set()

    def add_step(
        self, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> Ref:
        inputs = self._bind(tool, args, kwargs)
        return self._add(tool, inputs, options, None, None)

    def add_map(
        self, tool: Tool, over: Any, inputs: dict[str, Any], options: dict[str, Any]
    ) -> Ref:
        if not isinstance(over, Ref) or over._text.startswith(("$item", "$index")):
            raise FlowValidationError(
                f"tool {tool.name!r}: map over a reference to a list (the flow's input or a "
                f"step's output), not {type(over).__name__}"
            )
        source = over._typed
        item_typed = None if source is None else (source[0], js.item_schema(*source))
        return self._add(tool, self._bind(tool, (), inputs), options, over, item_typed)

    def _add(
        self,
        tool: Tool,
        inputs: dict[str, Any],
        options: dict[str, Any],
        over: Ref | None,
        item_typed: Typed | None,
    ) -> Ref:
        unknown = sorted(set(options) - set(STEP_OPTIONS))
        if unknown:
            raise FlowValidationError(
                f"tool {tool.name!r}: unknown step option {unknown[0]!r} "
                f"(options: {', '.join(STEP_OPTIONS)})"
            )
        sid = options.get("id") or self._new_id(tool.name)
        if sid in self.taken:
            raise FlowValidationError(f"flow {self.flow_name!r}: step id {sid!r} is used twice")
        where = f"step {sid!r} (tool {tool.name!r})"
        data = {}
        for name, value in inputs.items():
            if isinstance(value, Ref):
                self._check_fit(where, tool, name, value, item_typed)
            data[name] = self._data(value, where, over is not None, item_typed)
        fields = {k: v for k, v in options.items() if k not in ("id", "depends_on")}
        depends = [_step_of(d, where) for d in options.get("depends_on") or ()]
        try:
            step = Step(
                id=sid,
                tool=tool.name,
                inputs=data,
                depends_on=depends,
                map=over._text if over is not None else None,
                **fields,
            )
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise FlowValidationError(f"{where}: option {loc}: {err['msg']}") from None
        self.steps.append(step)
        self.taken.add(sid)
        out = tool_output(tool, over is not None)
        return Ref(f"$steps.{sid}", out, f"the output of {where}", sid)

    def _new_id(self, tool_name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_\-]", "_", tool_name)
        if not STEP_ID.match(base):
            base = f"_{base}"
        sid, n = base, 1
        while sid in self.taken:
            n += 1
            sid = f"{base}_{n}"
        return sid

    @staticmethod
    def _bind(tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(tool.parameters):
            raise FlowValidationError(
                f"tool {tool.name!r} takes {len(tool.parameters)} inputs "
                f"({', '.join(tool.parameters) or 'none'}); {len(args)} were given"
            )
        inputs = dict(zip(tool.parameters, args, strict=False))
        for name, value in kwargs.items():
            if name in inputs:
                raise FlowValidationError(f"tool {tool.name!r}: input {name!r} is given twice")
            inputs[name] = value
        problems = tool.check_inputs(set(inputs))
        if problems:
            raise FlowValidationError(f"tool {tool.name!r}: {'; '.join(problems)}")
        return inputs

    @staticmethod
    def _check_fit(where: str, tool: Tool, name: str, ref: Ref, item_typed: Typed | None) -> None:
        typed = ref._typed
        if ref._text == "$item" or ref._text.startswith("$item."):
            typed = item_typed
            if typed is not None:
                path = tuple(ref._text.split(".")[1:])
                try:
                    typed = (typed[0], js.follow(typed[0], typed[1], path))
                except js.MissingField as exc:
                    raise FlowValidationError(
                        f"{where}: {ref._text}: the map item {missing_text(exc)}"
                    ) from None
        why = fit_problem(typed, tool, name)
        if why is not None:
            raise FlowValidationError(f"{where}: input {name!r} = {ref._text}: {why}")

    def _data(self, value: Any, where: str, in_map: bool, item_typed: Typed | None) -> Any:
        """A Python value as step input data: references become `$...` strings."""
        if isinstance(value, Ref):
            if value._text.startswith(("$item", "$index")) and not in_map:
                raise FlowValidationError(
                    f"{where}: {value._text} is only for tool.map(...) inputs"
                )
            return value._text
        if isinstance(value, str):
            return "$" + value if value.startswith("$") else value  # a literal '$...'
        if isinstance(value, dict):
            return {str(k): self._data(v, where, in_map, item_typed) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._data(v, where, in_map, item_typed) for v in value]
        if isinstance(value, BaseModel):
            return self._data(value.model_dump(mode="json"), where, in_map, item_typed)
        if value is None or isinstance(value, bool | int | float):
            return value
        try:
            return self._data(to_jsonable_python(value), where, in_map, item_typed)
        except Exception:
            raise FlowValidationError(
                f"{where}: {type(value).__name__!r} is not a JSON value or a reference"
            ) from None


def _step_of(dep: Any, where: str) -> str:
    if isinstance(dep, Ref) and dep._step is not None:
        return dep._step
    if isinstance(dep, str):
        return dep
    raise FlowValidationError(f"{where}: depends_on takes step ids or step references")


@overload
def flow(fn: Callable[..., Any], /) -> Flow: ...
@overload
def flow(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    description: str | None = None,
    on_failure: OnFailure = "fail_fast",
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Flow]: ...
def flow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    description: str | None = None,
    on_failure: OnFailure = "fail_fast",
    timeout: float | None = None,
) -> Flow | Callable[[Callable[..., Any]], Flow]:
    """Build a `Flow` from a function whose body calls tools (`@flow` or `@flow(...)`).

    The function's parameters are the flow's input (their annotations its `input`
    schema); each tool call adds a step; the returned value (references in any
    structure) is the flow's output. The function runs once, when decorated.

    Raises:
        FlowValidationError: a step or reference is wrong, naming the tool and field.
    """

    def build(f: Callable[..., Any]) -> Flow:
        flow_name = name or f.__name__
        if inspect.iscoroutinefunction(f):
            raise FlowValidationError(
                f"flow {flow_name!r}: a @flow function wires steps and is not async "
                "(its tools may be)"
            )
        input_schema = _input_schema(f, flow_name)
        refs = {
            p: Ref(f"$input.{p}", (input_schema, props), f"the flow's input {p!r}", None)
            for p, props in input_schema["properties"].items()
        }
        builder = _Builder(flow_name)
        token = building.current.set(builder)
        try:
            returned = f(**refs)
            output = builder._data(returned, "output", False, None)
        except FlowValidationError as exc:
            if exc.source is not None:
                raise
            raise FlowValidationError(exc.problems, f"flow {flow_name!r}") from None
        finally:
            building.current.reset(token)
        doc = (inspect.getdoc(f) or "").split("\n")[0] or None
        result = Flow(
            name=flow_name,
            version=version,
            description=description or doc,
            input=input_schema,
            steps=builder.steps,
            output=output,
            on_failure=on_failure,
            timeout=timeout,
        )
        try:
            validate_flow(result, None)
        except FlowValidationError as exc:
            raise FlowValidationError(exc.problems, f"flow {flow_name!r}") from None
        return result

    return build(fn) if fn is not None else build


def _input_schema(f: Callable[..., Any], flow_name: str) -> dict[str, Any]:
    """The JSON Schema of a `@flow` function's parameters, the flow's input."""
    try:
        hints = get_type_hints(f, include_extras=True)
    except Exception as exc:  # a name only defined later, or inside a function
        raise FlowValidationError(
            f"flow {flow_name!r}: cannot resolve its parameters' annotations: {exc}"
        ) from None
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(f).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise FlowValidationError(
                f"flow {flow_name!r}: parameter {pname!r}: a flow's input is named fields "
                "(no *args, **kwargs or positional-only parameters)"
            )
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    model = create_model(f"{flow_name}_input", __config__=ConfigDict(extra="forbid"), **fields)
    try:
        schema = js.strip_titles(model.model_json_schema())
    except Exception as exc:
        raise FlowValidationError(
            f"flow {flow_name!r}: its parameters' types have no JSON Schema: {exc}"
        ) from None
    # The order a person writes a schema in: what it is, its fields, then the rules.
    order = ["type", "properties", "required", "additionalProperties"]
    ordered = {k: schema[k] for k in order if k in schema}
    ordered.update((k, v) for k, v in schema.items() if k not in ordered)
    ordered.setdefault("properties", {})
    return ordered


def import_flow(spec: str) -> Flow:
    """The `Flow` named by `module:name` (or `path/to/file.py:name`), importing it.

    Raises:
        DagrelayError: the module cannot be imported, or has no such `Flow`.
    """
    module, _, attr = spec.rpartition(":")
    if not module or not attr:
        raise DagrelayError(f"{spec!r}: name a Python flow as module:name")
    found = getattr(import_module(module, "flow module"), attr, None)
    if not isinstance(found, Flow):
        kind = "nothing" if found is None else f"a {type(found).__name__}"
        raise DagrelayError(f"{spec}: {attr!r} in {module!r} is {kind}, not a @flow")
    return found


def is_flow_name(text: str) -> bool:
    """Whether a command-line FLOW names a Python flow (`module:name`), not a file."""
    return re.fullmatch(r"[\w./\\-]+(\.py)?:[A-Za-z_]\w*", text) is not None
