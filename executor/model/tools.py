"""Typed tools: functions whose inputs and outputs pydantic validates, and their registry."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticSerializationError, to_jsonable_python

from executor.errors import DagrelayError, StepInputError, ToolOutputError
from executor.model import building
from executor.model.retry import RetryPolicy
from executor.model.schema import strip_titles, type_schema


class _InputsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Tool:
    """A registered function with validated inputs and JSON-compatible outputs.

    Calling the `Tool` calls the function unchanged, so decorated functions keep working
    as plain Python. Executors use `validate_inputs`, `call` and `dump_output`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        description: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"tool expects a function, got {fn!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError("tool timeout must be positive")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("tool max_concurrency must be at least 1")
        self.fn = fn
        self.name = name or fn.__name__
        self.timeout = timeout
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.description = description or (inspect.getdoc(fn) or "").split("\n")[0] or None
        self.is_async = inspect.iscoroutinefunction(fn)
        self.origin = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
        self._signature = inspect.signature(fn)
        hints = get_type_hints(fn, include_extras=True)
        fields: dict[str, Any] = {}
        self.required: frozenset[str]
        required: set[str] = set()
        self.accepts_any = False
        for pname, param in self._signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                self.accepts_any = True
                continue
            if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
                raise TypeError(
                    f"tool {self.name!r}: parameter {pname!r} must be passable by keyword"
                )
            annotation = hints.get(pname, Any)
            if param.default is param.empty:
                required.add(pname)
                fields[pname] = (annotation, ...)
            else:
                fields[pname] = (annotation, param.default)
        self.required = frozenset(required)
        self.parameters: tuple[str, ...] = tuple(fields)
        config_base: type[BaseModel] = _InputsBase
        if self.accepts_any:
            config_base = type(
                "_InputsAllowExtra",
                (_InputsBase,),
                {"model_config": ConfigDict(extra="allow", arbitrary_types_allowed=True)},
            )
        self.input_model: type[BaseModel] = create_model(
            f"{self.name}_inputs", __base__=config_base, **fields
        )
        returns = hints.get("return", inspect.Signature.empty)
        self.returns: Any = None if returns in (inspect.Signature.empty, Any) else returns
        self.output_adapter: TypeAdapter[Any] | None = (
            None if returns in (inspect.Signature.empty, Any) else TypeAdapter(returns)
        )
        # The adapter's core validator and serializer: its own methods add a Python call
        # passing a dozen default keywords, twice per step.
        self._check_output: Callable[[Any], Any] | None = None
        self._serialize_output: Callable[..., Any] | None = None
        if self.output_adapter is not None:
            self._check_output = self.output_adapter.validator.validate_python
            self._serialize_output = self.output_adapter.serializer.to_python

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = building.current.get()
        if builder is not None:  # inside a `@flow` body: the call is a step
            return builder.add_step(self, args, kwargs, {})
        return self.fn(*args, **kwargs)

    def options(self, **options: Any) -> Any:
        """This tool's call with step options, for `@flow` bodies.

        `fetch.options(id="user", retry=RetryPolicy(max_attempts=3))(user_id=uid)`; the
        options are `Step`'s: id, retry, timeout, when, trigger, queue, depends_on (step
        ids or references), description.
        """
        return building.Call(self, options)

    def map(self, over: Any, /, **inputs: Any) -> Any:
        """In a `@flow` body: one call of this tool per item of `over` (a list reference).

        `executor.item` and `executor.index` in `inputs` stand for the item and its
        position: `fetch.map(pages.urls, url=item)`.
        """
        return building.Call(self, {}).map(over, **inputs)

    @functools.cached_property
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the tool's output as stored (None: not annotated)."""
        return None if self.returns is None else type_schema(self.returns, "serialization")

    @functools.cached_property
    def input_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the tool's inputs, one property per parameter."""
        try:
            return strip_titles(self.input_model.model_json_schema())
        except Exception:  # a parameter type pydantic checks only with isinstance
            return None

    def __repr__(self) -> str:
        return f"<Tool {self.name} ({self.origin})>"

    def check_inputs(self, names: set[str]) -> list[str]:
        """Problems with calling this tool with these input names (missing, unknown)."""
        problems = [f"missing required input {n!r}" for n in sorted(self.required - names)]
        if not self.accepts_any:
            unknown = sorted(names - set(self.parameters))
            problems += [
                f"unknown input {n!r} (parameters: {', '.join(self.parameters) or 'none'})"
                for n in unknown
            ]
        return problems

    def validate_inputs(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate resolved inputs against the signature; returns call kwargs.

        Raises:
            StepInputError: the inputs do not fit, naming every field that is wrong.
        """
        try:
            # The core validator itself: `model_validate` adds a Python call per step.
            model = self.input_model.__pydantic_validator__.validate_python(data)
        except ValidationError as exc:
            raise StepInputError(f"inputs of tool {self.name!r}: {_brief(exc)}") from None
        # The declared fields (exactly `parameters`) live in __dict__, extras apart.
        kwargs = model.__dict__.copy()
        if model.__pydantic_extra__:
            kwargs.update(model.__pydantic_extra__)
        return kwargs

    def dump_output(self, value: Any) -> Any:
        """Validate a return value against the annotation and dump it to JSON data.

        Raises:
            ToolOutputError: it does not fit the annotation or is not JSON-compatible.
        """
        try:
            if self._check_output is None or self._serialize_output is None:
                return to_jsonable_python(value)
            return self._serialize_output(self._check_output(value), mode="json")
        except ValidationError as exc:
            raise ToolOutputError(f"output of tool {self.name!r}: {_brief(exc)}") from None
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise ToolOutputError(
                f"output of tool {self.name!r} is not JSON-compatible: {exc}"
            ) from None


#: The largest step output (as JSON) a worker stores in Redis, unless configured.
DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024


def check_output_size(tool: str, output_json: str, limit: int | None) -> None:
    """Refuse an output whose JSON is larger than `limit` bytes (None: no limit).

    Raises:
        ToolOutputError: naming the tool, the size and the limit.
    """
    # json.dumps escapes non-ASCII by default, so characters are bytes here.
    if limit is not None and len(output_json) > limit:
        raise ToolOutputError(
            f"output of tool {tool!r} is {len(output_json):,} bytes of JSON, over the "
            f"limit of {limit:,} bytes per step (max_output_bytes, DAGRELAY_MAX_OUTPUT_BYTES)"
        )


def _brief(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<value>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class ToolRegistry:
    """Tools by name. A worker or executor runs only tools registered in its process."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()

    def register(self, tool: Tool) -> Tool:
        """Add a tool.

        Raises:
            DagrelayError: another function is already registered under that name.
        """
        with self._lock:
            existing = self._tools.get(tool.name)
            # Re-importing the same module (reload, `python -m` plus import) re-registers
            # the same function: replace it. A different function under the name is a bug.
            if existing is not None and existing.origin != tool.origin:
                raise DagrelayError(
                    f"tool name {tool.name!r} is taken by {existing.origin}; "
                    f"cannot register {tool.origin}"
                )
            self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        """The tool of that name. Raises KeyError naming the known tools if absent."""
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none registered"
            raise KeyError(f"unknown tool {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def tool(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator registering into this registry; same options as `executor.tool`."""
        if fn is None:
            return tool(registry=self, **options)
        return tool(registry=self, **options)(fn)


default_registry = ToolRegistry()


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Register a sync or async function as a tool (`@tool` or `@tool(name=..., ...)`).

    Args:
        name: the name flows use; defaults to the function name.
        timeout: seconds per attempt, the default for steps using the tool.
        retry: the default `RetryPolicy` of steps using the tool.
        max_concurrency: at most this many calls running at once.
        registry: where to register; defaults to `default_registry`.
    """

    def decorate(f: Callable[..., Any]) -> Tool:
        t = Tool(
            f,
            name=name,
            timeout=timeout,
            retry=retry,
            max_concurrency=max_concurrency,
            description=description,
        )
        return (registry if registry is not None else default_registry).register(t)

    return decorate(fn) if fn is not None else decorate


def load_tools(module: str, registry: ToolRegistry | None = None) -> ToolRegistry:
    """Import a tools module (by dotted name or file path) and return its registry.

    The module's own `registry` attribute is used when it has one, else the registry
    passed in (default: `default_registry`), which its `@tool` decorators filled.

    Raises:
        DagrelayError: the module cannot be imported, with the import error.
    """
    mod = import_module(module, "tools module")
    own = getattr(mod, "registry", None)
    if isinstance(own, ToolRegistry):
        return own
    return registry if registry is not None else default_registry


def import_module(module: str, what: str) -> ModuleType:
    """Import a module by dotted name or by file path (its folder goes on `sys.path`).

    Raises:
        DagrelayError: naming `what` and the import error.
    """
    if module.endswith(".py") or os.sep in module:
        # A file path: import it by its stem with its folder on the path.
        directory, filename = os.path.split(os.path.abspath(module))
        if directory not in sys.path:
            sys.path.insert(0, directory)
        module = filename.removesuffix(".py")
    elif os.getcwd() not in sys.path and "" not in sys.path:
        # The console script's sys.path lacks the working directory, unlike `python -m`.
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise DagrelayError(
            f"cannot import {what} {module!r}: {type(exc).__name__}: {exc}"
        ) from exc
