"""Pictures of a flow's DAG: mermaid (`flowchart TD`) and graphviz dot.

Each node shows the step id and its tool; map steps, `when` conditions and trigger rules
are marked in the label (and by the node's shape); ordering-only `depends_on` edges are
dashed. Given a `RunRecord`, each node also shows its status and duration, nodes
are coloured by status and the critical path's edges are drawn bold.

    from executor.views.diagram import render_graph
    print(render_graph(flow, "mermaid"))
    print(render_graph(flow, "dot", result=result))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from executor.model.dag import Dag
from executor.model.references import ReferenceSyntaxError, iter_refs, parse_ref
from executor.model.spec import FlowSpec
from executor.model.validation import validate_flow
from executor.run.records import RunRecord, StepRecord
from executor.views.format import format_seconds

GraphFormat = Literal["mermaid", "dot"]
FORMATS: tuple[GraphFormat, ...] = ("mermaid", "dot")
MAX_TEXT = 60  # longest `when` / `map` text shown in a label before it is cut

# fill, border: one palette for both formats.
STATUS_COLORS: dict[str, tuple[str, str]] = {
    "succeeded": ("#dcfce7", "#16a34a"),
    "failed": ("#fee2e2", "#dc2626"),
    "upstream_failed": ("#ffedd5", "#ea580c"),
    "cancelled": ("#fef9c3", "#ca8a04"),
    "skipped": ("#f3f4f6", "#9ca3af"),
    "running": ("#dbeafe", "#2563eb"),
    "queued": ("#eef2ff", "#6366f1"),
    "pending": ("#ffffff", "#6b7280"),
}


@dataclass(slots=True)
class Node:
    """One step as drawn: its label lines and what kind of step it is."""

    step_id: str
    lines: list[str]
    is_map: bool = False
    conditional: bool = False
    status: str | None = None


@dataclass(slots=True)
class Edge:
    """`source` must finish before `target`; `ordering` when only `depends_on` links them."""

    source: str
    target: str
    ordering: bool = False
    critical: bool = False


@dataclass(slots=True)
class Graph:
    """The format-neutral picture both renderers draw."""

    name: str
    version: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def render_graph(
    flow: FlowSpec,
    fmt: GraphFormat = "mermaid",
    result: RunRecord | None = None,
    dag: Dag | None = None,
) -> str:
    """The flow's DAG as mermaid or dot text (ending in a newline).

    Args:
        result: a run of this flow; annotates nodes with status and duration.
        dag: the flow's validated graph, if already at hand.
    Raises:
        FlowValidationError: the flow's structure is invalid (unknown steps, cycles...).
        ValueError: an unknown format.
    """
    graph = build_graph(flow, result, dag)
    if fmt == "mermaid":
        return _mermaid(graph)
    if fmt == "dot":
        return _dot(graph)
    raise ValueError(f"unknown graph format {fmt!r} (use {' or '.join(FORMATS)})")


def to_mermaid(flow: FlowSpec, result: RunRecord | None = None) -> str:
    """The flow as a mermaid `flowchart TD`."""
    return render_graph(flow, "mermaid", result)


def to_dot(flow: FlowSpec, result: RunRecord | None = None) -> str:
    """The flow as a graphviz `digraph`."""
    return render_graph(flow, "dot", result)


def build_graph(flow: FlowSpec, result: RunRecord | None = None, dag: Dag | None = None) -> Graph:
    """Nodes and edges of a flow (validated for structure), annotated from `result`."""
    if dag is None:
        dag = validate_flow(flow, None)
    records = result.steps if result is not None else {}
    graph = Graph(flow.name, flow.version)
    for sid, step in dag.steps.items():
        lines = [sid, f"tool: {step.tool}"]
        if step.map is not None:
            lines.append(f"map: {_cut(step.map)}")
        if step.when is not None:
            lines.append(f"when: {_cut(step.when)}")
        if step.trigger != "all_success":
            lines.append(f"trigger: {step.trigger}")
        rec = records.get(sid)
        if rec is not None:
            lines.append(_run_line(rec))
        graph.nodes.append(
            Node(
                sid,
                lines,
                is_map=step.map is not None,
                conditional=step.when is not None,
                status=rec.status if rec is not None else None,
            )
        )
    critical = set()
    if result is not None:
        critical = set(zip(result.critical_path, result.critical_path[1:], strict=False))
    for sid, deps in dag.deps.items():
        data = _data_deps(dag, sid)
        for dep in deps:
            graph.edges.append(
                Edge(dep, sid, ordering=dep not in data, critical=(dep, sid) in critical)
            )
    return graph


def _data_deps(dag: Dag, sid: str) -> set[str]:
    """Steps that `sid` reads (inputs, map, when), as opposed to `depends_on` only."""
    step = dag.steps[sid]
    texts = list(iter_refs(step.inputs))
    if step.map is not None:
        texts.append(step.map)
    found: set[str] = set()
    for text in texts:
        try:
            ref = parse_ref(text)
        except ReferenceSyntaxError:  # pragma: no cover - validated already
            continue
        if ref.step is not None:
            found.add(ref.step)
    predicate = dag.predicates.get(sid)
    if predicate is not None:
        found |= predicate.steps
    return found


def _run_line(rec: StepRecord) -> str:
    parts: list[str] = [rec.status]
    if rec.duration is not None:
        parts.append(format_seconds(rec.duration))
    if rec.items is not None:
        parts.append(f"{len(rec.items)} item" + ("" if len(rec.items) == 1 else "s"))
    elif len(rec.attempts) > 1:
        parts.append(f"{len(rec.attempts)} attempts")
    return " · ".join(parts)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


# Mermaid ----------------------------------------------------------------------------
_MERMAID_ESCAPES = {
    "#": "#35;",  # first: every escape below starts with '#'
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
}


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted mermaid label (entity codes; no HTML, no markdown)."""
    out = "".join(_MERMAID_ESCAPES.get(c, c) for c in text)
    return " ".join(out.splitlines()) if "\n" in out or "\r" in out else out


def _mermaid(graph: Graph) -> str:
    # Steps get generated node ids: step ids may contain '-' or be mermaid keywords (end).
    ids = {node.step_id: f"s{i}" for i, node in enumerate(graph.nodes)}
    comment = " ".join(f"flow {graph.name} v{graph.version}".split())
    out = ["flowchart TD", f"    %% {comment}"]
    for node in graph.nodes:
        label = "<br/>".join(mermaid_escape(line) for line in node.lines)
        if node.is_map:
            shape = f'[["{label}"]]'
        elif node.conditional:
            shape = f'{{{{"{label}"}}}}'
        else:
            shape = f'["{label}"]'
        out.append(f"    {ids[node.step_id]}{shape}")
    bold: list[int] = []
    for i, edge in enumerate(graph.edges):
        arrow = "-.->" if edge.ordering else "-->"
        out.append(f"    {ids[edge.source]} {arrow} {ids[edge.target]}")
        if edge.critical:
            bold.append(i)
    if bold:
        out.append(f"    linkStyle {','.join(map(str, bold))} stroke-width:3px")
    used = sorted({n.status for n in graph.nodes if n.status is not None})
    for status in used:
        fill, stroke = STATUS_COLORS.get(status, STATUS_COLORS["pending"])
        dash = ",stroke-dasharray:4 3" if status == "skipped" else ""
        out.append(f"    classDef {status} fill:{fill},stroke:{stroke},color:#111827{dash}")
        members = ",".join(ids[n.step_id] for n in graph.nodes if n.status == status)
        out.append(f"    class {members} {status}")
    return "\n".join(out) + "\n"


# Graphviz dot -----------------------------------------------------------------------
def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted dot string; newlines become dot's `\\n`."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    return out.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def _dot(graph: Graph) -> str:
    q = dot_escape
    out = [
        f'digraph "{q(graph.name)}" {{',
        f'    label="{q(graph.name)} v{q(graph.version)}";',
        "    labelloc=t;",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded", fontname="Helvetica", fontsize=11];',
        '    edge [color="#4b5563"];',
    ]
    for node in graph.nodes:
        attrs = [f'label="{q(chr(10).join(node.lines))}"']
        if node.is_map:
            attrs.append("shape=box3d")
        styles = ["rounded"]
        if node.conditional:
            styles.append("dashed")
        if node.status is not None:
            fill, stroke = STATUS_COLORS.get(node.status, STATUS_COLORS["pending"])
            styles.append("filled")
            attrs += [f'fillcolor="{fill}"', f'color="{stroke}"']
            if node.status == "skipped" and "dashed" not in styles:
                styles.append("dashed")
        attrs.append(f'style="{",".join(styles)}"')
        out.append(f'    "{q(node.step_id)}" [{", ".join(attrs)}];')
    for edge in graph.edges:
        attrs = []
        if edge.ordering:
            attrs.append("style=dashed")
        if edge.critical:
            attrs.append("penwidth=2.5")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f'    "{q(edge.source)}" -> "{q(edge.target)}"{suffix};')
    out.append("}")
    return "\n".join(out) + "\n"
