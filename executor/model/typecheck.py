"""Types across steps, checked before a run: reference paths and what flows into a parameter.

Where a producer's output type (a tool's return annotation, the flow's `input:` schema)
and a consumer's parameter type are both known, a reference that names a field the
producer lacks, or a value that can never fit the parameter (a string into an `int`),
is a problem of the flow, found at validation rather than as a step failure mid-run.
"""

from __future__ import annotations

from executor.model import schema as js
from executor.model.references import ReferenceSyntaxError, iter_refs, parse_ref
from executor.model.spec import FlowSpec, Step
from executor.model.tools import Tool, ToolRegistry

# A value's schema and the document its `$ref`s resolve in.
Typed = tuple[js.Schema, js.Schema | None]
_INDEX: Typed = ({}, {"type": "integer"})


def tool_output(tool: Tool, mapped: bool) -> Typed | None:
    """The type of a step's output: its tool's, a list of them for a map step."""
    out = tool.output_schema
    if out is None:
        return None
    return (out, {"type": "array", "items": out}) if mapped else (out, out)


def parameter(tool: Tool, name: str) -> Typed | None:
    """The type a tool's parameter accepts (None: unknown or any)."""
    schema = tool.input_schema
    props = schema.get("properties") if schema else None
    if not isinstance(props, dict) or name not in props:
        return None
    return schema, props[name]  # type: ignore[return-value]


def fit_problem(value: Typed | None, tool: Tool, name: str) -> str | None:
    """Why a value of type `value` can never be `tool`'s parameter `name` (None: it may)."""
    expected = parameter(tool, name)
    if value is None or expected is None:
        return None
    produced = js.types_of(*value)
    wanted = js.types_of(*expected)
    if not js.cannot_fit(produced, wanted):
        return None
    return (
        f"{js.a_kind(produced)} cannot be parameter {name!r} of tool {tool.name!r} "
        f"({js.describe(wanted)})"
    )


def follow(value: Typed, path: tuple[str, ...]) -> Typed:
    """The type at `path` inside a value of type `value`.

    Raises:
        schema.MissingField: the path names a field the type lacks.
    """
    root, schema = value
    return root, js.follow(root, schema, path)


def missing_text(exc: js.MissingField) -> str:
    """`has no field 'nmae' (fields: id, name)`: the tail of a path problem."""
    if exc.fields:
        return f"has no field {exc.field!r} (fields: {', '.join(exc.fields)})"
    return f"has no field {exc.field!r} (it is {exc.kind})"


def reference_problems(
    flow: FlowSpec, steps: dict[str, Step], registry: ToolRegistry | None
) -> list[str]:
    """Reference paths and parameter types a flow gets wrong, one line each.

    Only what is known is checked: a step whose tool is not in `registry`, or has no
    annotations, produces and accepts anything.
    """
    tools = {
        sid: registry.get(s.tool)
        for sid, s in steps.items()
        if registry is not None and s.tool in registry
    }
    problems: list[str] = []
    inputs: Typed | None = (flow.input, flow.input) if isinstance(flow.input, dict) else None

    def typed(text: str, item: Typed | None) -> tuple[Typed | None, str]:
        """The type of a reference and what produces it (for messages)."""
        ref = parse_ref(text)
        if ref.root == "input":
            start, what = inputs, "the flow's input"
        elif ref.root == "index":
            return _INDEX, "$index"
        elif ref.root == "item":
            start, what = item, "the map item"
        else:
            assert ref.step is not None
            producer = tools.get(ref.step)
            mapped = ref.step in steps and steps[ref.step].map is not None
            start = tool_output(producer, mapped) if producer is not None else None
            what = f"output of step {ref.step!r}"
        if start is None:
            return None, what
        return follow(start, ref.path), what

    for sid, step in steps.items():
        where = f"step {sid!r}"
        item: Typed | None = None
        if step.map is not None and step.map.startswith("$"):
            try:
                source, _ = typed(step.map, None)
            except js.MissingField as exc:
                problems.append(f"{where}: map {step.map}: {_what(step.map)} {missing_text(exc)}")
            except (ReferenceSyntaxError, KeyError):
                pass
            else:
                item = None if source is None else (source[0], js.item_schema(*source))
        tool = tools.get(sid)
        for name, value in step.inputs.items():
            try:
                texts = list(iter_refs(value))
            except ReferenceSyntaxError:
                continue
            for text in texts:
                try:
                    found, what = typed(text, item)
                except js.MissingField as exc:
                    problems.append(f"{where}: reference {text}: {_what(text)} {missing_text(exc)}")
                    continue
                except (ReferenceSyntaxError, KeyError):
                    continue  # validation names these
                if tool is not None and text == value:
                    why = fit_problem(found, tool, name)
                    if why is not None:
                        problems.append(f"{where}: input {name!r} = {text} ({what}): {why}")
    try:
        out_refs = list(iter_refs(flow.output))
    except ReferenceSyntaxError:
        out_refs = []
    for text in out_refs:
        try:
            typed(text, None)
        except js.MissingField as exc:
            problems.append(f"output: reference {text}: {_what(text)} {missing_text(exc)}")
        except (ReferenceSyntaxError, KeyError):
            pass
    return problems


def _what(text: str) -> str:
    ref = parse_ref(text)
    if ref.root == "steps":
        return f"the output of step {ref.step!r}"
    return {"input": "the flow's input", "item": "the map item"}.get(ref.root, ref.root)
