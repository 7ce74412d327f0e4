"""A run as a worker process knows it: its flow's graph, input and scheduling core."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from executor.backends.redis.messages import DEFAULT_QUEUE, lane_of
from executor.model.dag import Dag
from executor.model.references import iter_refs, parse_ref
from executor.model.spec import FlowSpec
from executor.model.validation import validate_flow
from executor.run.scheduling import Scheduler


@dataclass(slots=True)
class RunContext:
    """A run's flow and input, parsed once per process and cached."""

    run_id: str
    dag: Dag
    inputs: Any
    scheduler: Scheduler
    needs: dict[str, tuple[str, ...]]  # steps whose outputs each step's inputs read
    item_needs: dict[str, tuple[str, ...]]  # the same for each item of a map step
    # What a process derives from the flow once per run (e.g. its limited tools).
    derived: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, run_id: str, flow: FlowSpec, inputs: Any, dag: Dag | None = None) -> RunContext:
        dag = dag or validate_flow(flow)
        needs, item_needs = {}, {}
        for sid, step in dag.steps.items():
            found = _steps_read(list(iter_refs(step.inputs)))
            pred = dag.predicates.get(sid)
            if step.map is not None:
                # An item reads its own value (stored with it), not the whole list.
                item_needs[sid] = tuple(found)
                found.update(_steps_read([step.map]))
                if pred is not None:
                    found.update(dict.fromkeys(pred.steps))
            needs[sid] = tuple(found)
        return cls(run_id, dag, inputs, Scheduler(dag), needs, item_needs)

    def with_inputs(self, run_id: str, inputs: Any) -> RunContext:
        """Another run of the same flow."""
        return RunContext(run_id, self.dag, inputs, self.scheduler, self.needs, self.item_needs)

    def queue(self, step_id: str) -> str:
        return self.dag.steps[step_id].queue or DEFAULT_QUEUE

    def lane(self, step_id: str, is_async: bool) -> str:
        """The Dramatiq queue a step's units wait on: its queue's sync or async lane."""
        return lane_of(self.queue(step_id), is_async)

    def script_fields(self) -> dict[str, str]:
        """What the store's scripts read of the flow, stored with the run: the steps each
        unit reads outputs of, fail_fast, and the steps its stop spares."""
        fields = {f"n:{s}": ",".join(n) for s, n in self.needs.items() if n}
        fields.update({f"n:{s}[]": ",".join(n) for s, n in self.item_needs.items() if n})
        fields.update({f"tool:{s}": self.dag.steps[s].tool for s in self.item_needs})
        fields["ff"] = "1" if self.scheduler.fail_fast else "0"
        survivors = {s: list(self.dag.deps[s]) for s in sorted(self.scheduler.survivors)}
        fields["surv"] = json.dumps(survivors) if survivors else ""
        return fields


def _steps_read(refs: list[str]) -> dict[str, None]:
    found: dict[str, None] = {}
    for text in refs:
        ref = parse_ref(text)
        if ref.step is not None:
            found[ref.step] = None
    return found
