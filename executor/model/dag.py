"""A flow's dependency graph: edges from references, `when` and `depends_on`; cycles."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from executor.model.predicates import Predicate
from executor.model.spec import FlowSpec, Step


@dataclass(slots=True)
class Dag:
    """The checked graph of a flow, what schedulers walk."""

    flow: FlowSpec
    steps: dict[str, Step]
    deps: dict[str, tuple[str, ...]]
    dependents: dict[str, tuple[str, ...]]
    predicates: dict[str, Predicate] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        """Steps with no dependencies, in flow order."""
        return [s for s, d in self.deps.items() if not d]

    def topological_order(self) -> list[str]:
        """Every step after its dependencies (flow order among equals)."""
        order = _kahn(self.deps, self.dependents)
        assert len(order) == len(self.deps), "validated DAGs have no cycle"
        return order


def _kahn(
    deps: Mapping[str, tuple[str, ...]], dependents: Mapping[str, tuple[str, ...]]
) -> list[str]:
    remaining = {s: len(d) for s, d in deps.items()}
    ready = deque(s for s, n in remaining.items() if n == 0)
    order: list[str] = []
    while ready:
        s = ready.popleft()
        order.append(s)
        for child in dependents[s]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
    return order


def find_cycle(
    deps: Mapping[str, tuple[str, ...]], dependents: Mapping[str, tuple[str, ...]]
) -> list[str] | None:
    """One cycle as a path `[a, b, c, a]` (each depends on the next's output), or None."""
    done = set(_kahn(deps, dependents))
    if len(done) == len(deps):
        return None
    left = [s for s in deps if s not in done]
    # Every step left over sits on or after a cycle: walk dependencies (iteratively,
    # flows may be long) until a step repeats.
    start = left[0]
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d not in done)
    cycle = [*path[seen[node] :], node]
    cycle.reverse()  # print in execution order: a -> b means b uses a
    return cycle
