"""Flow validation: every problem at once, each in one line naming the step."""

from __future__ import annotations

from collections.abc import Iterable

from executor.errors import FlowValidationError
from executor.model.dag import Dag, find_cycle
from executor.model.predicates import Predicate, PredicateError, parse_predicate
from executor.model.references import STEP_ID, ReferenceSyntaxError, iter_refs, parse_ref
from executor.model.schema import check_schema
from executor.model.spec import FlowSpec, Step
from executor.model.tools import ToolRegistry
from executor.model.typecheck import reference_problems


def validate_flow(
    flow: FlowSpec, registry: ToolRegistry | None = None, source: str | None = None
) -> Dag:
    """Check a flow and build its graph.

    Args:
        registry: tools to check names and input names against; None skips those checks.
        source: where the flow came from, for messages.
    Raises:
        FlowValidationError: with every problem found.
    """
    problems: list[str] = []
    steps: dict[str, Step] = {}
    for step in flow.steps:
        if not STEP_ID.match(step.id):
            problems.append(
                f"step {step.id!r}: invalid id (letters, digits, '_' and '-'; "
                "not starting with a digit or '-')"
            )
        if step.id in steps:
            problems.append(f"step {step.id!r}: duplicate id")
            continue
        steps[step.id] = step

    deps: dict[str, tuple[str, ...]] = {}
    predicates: dict[str, Predicate] = {}
    for sid, step in steps.items():
        where = f"step {sid!r}"
        found: dict[str, None] = {}  # ordered set
        in_map = step.map is not None
        for text in _refs(step, problems, where):
            try:
                ref = parse_ref(text)
            except ReferenceSyntaxError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if ref.root in ("item", "index") and not in_map:
                problems.append(f"{where}: {text} is only available in a map step")
            if ref.step is not None:
                _add_dep(ref.step, found, steps, sid, problems, where, f"reference {text}")
        if step.map is not None:
            try:
                mref = parse_ref(step.map) if step.map.startswith("$") else None
            except ReferenceSyntaxError as exc:
                problems.append(f"{where}: map {exc}")
                mref = None
            else:
                if mref is None or mref.root not in ("input", "steps"):
                    problems.append(
                        f"{where}: map must be a reference to a list ($input... or $steps...)"
                    )
                elif mref.step is not None:
                    _add_dep(mref.step, found, steps, sid, problems, where, f"map {step.map}")
        if step.when is not None:
            try:
                pred = parse_predicate(step.when)
            except PredicateError as exc:
                problems.append(f"{where}: {exc}")
            else:
                predicates[sid] = pred
                if not in_map and _uses_item(pred):
                    problems.append(f"{where}: when uses item/index outside a map step")
                for dep in sorted(pred.steps):
                    _add_dep(dep, found, steps, sid, problems, where, f"when {step.when!r}")
        for dep in step.depends_on:
            _add_dep(dep, found, steps, sid, problems, where, "depends_on")
        deps[sid] = tuple(found)
        if registry is not None:
            if step.tool not in registry:
                names = registry.names()
                known = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                known = known or "none registered"
                problems.append(f"{where}: unknown tool {step.tool!r} (known: {known})")
            else:
                for p in registry.get(step.tool).check_inputs(set(step.inputs)):
                    problems.append(f"{where}: tool {step.tool!r}: {p}")

    for text in _safe_refs(flow.output, problems, "output"):
        try:
            ref = parse_ref(text)
        except ReferenceSyntaxError as exc:
            problems.append(f"output: {exc}")
            continue
        if ref.root in ("item", "index"):
            problems.append(f"output: {text} is only available in a map step")
        elif ref.step is not None and ref.step not in steps:
            problems.append(f"output: reference {text} names unknown step {ref.step!r}")

    if flow.input is not None:
        schema_problems = check_schema(flow.input)
        problems += schema_problems
    if flow.input is None or not schema_problems:
        problems += reference_problems(flow, steps, registry)

    dependents: dict[str, list[str]] = {sid: [] for sid in steps}
    for sid, ds in deps.items():
        for d in ds:
            dependents[d].append(sid)
    frozen = {k: tuple(v) for k, v in dependents.items()}
    if find_cycle(deps, frozen) is not None:
        for cycle in _cycles(deps):
            problems.append("cycle: " + " -> ".join(cycle))
    if not flow.steps:
        problems.append("flow has no steps")
    if problems:
        raise FlowValidationError(problems, source)
    return Dag(flow, steps, deps, frozen, predicates)


def _refs(step: Step, problems: list[str], where: str) -> Iterable[str]:
    for key in step.inputs:
        if not isinstance(key, str) or not key.isidentifier():
            problems.append(f"{where}: input name {key!r} is not a valid parameter name")
    return _safe_refs(step.inputs, problems, f"{where}: inputs")


def _safe_refs(value: object, problems: list[str], where: str) -> list[str]:
    """The references in a value; a value nested too deeply is a problem, not a crash."""
    found: list[str] = []
    try:
        found.extend(iter_refs(value))
    except ReferenceSyntaxError as exc:
        problems.append(f"{where} {exc}")
    return found


def _cycles(deps: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """One cycle per strongly connected component, each as `[a, b, c, a]`.

    In a path `a -> b`, b uses a (execution order). Tarjan's algorithm, iterative, so
    long flows cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in deps:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            children = deps[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    order = {sid: i for i, sid in enumerate(deps)}
    cycles = []
    for component in sorted(components, key=lambda c: min(order[s] for s in c)):
        members = set(component)
        start = min(component, key=order.__getitem__)
        seen: dict[str, int] = {}
        path: list[str] = []
        node = start
        while node not in seen:  # every member has a dependency inside the component
            seen[node] = len(path)
            path.append(node)
            node = next(d for d in deps[node] if d in members)
        cycle = [*path[seen[node] :], node]
        cycle.reverse()  # a -> b means b uses a
        cycles.append(cycle)
    return cycles


def _add_dep(
    dep: str,
    found: dict[str, None],
    steps: dict[str, Step],
    sid: str,
    problems: list[str],
    where: str,
    via: str,
) -> None:
    if dep == sid:
        problems.append(f"{where}: {via} refers to the step itself")
    elif dep not in steps:
        problems.append(f"{where}: {via} names unknown step {dep!r}")
    else:
        found[dep] = None


def _uses_item(pred: Predicate) -> bool:
    import ast

    return any(isinstance(n, ast.Name) and n.id in ("item", "index") for n in ast.walk(pred.tree))
