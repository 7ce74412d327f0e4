"""A run as a worker process knows it: its flow's graph, input and scheduling core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from executor.backends.redis.messages import DEFAULT_QUEUE
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

    @classmethod
    def build(cls, run_id: str, flow: FlowSpec, inputs: Any, dag: Dag | None = None) -> RunContext:
        dag = dag or validate_flow(flow)
        needs = {}
        for sid, step in dag.steps.items():
            texts = list(iter_refs(step.inputs)) + ([step.map] if step.map else [])
            found: dict[str, None] = {}
            for text in texts:
                ref = parse_ref(text)
                if ref.step is not None:
                    found[ref.step] = None
            pred = dag.predicates.get(sid)
            if pred is not None and step.map is not None:
                found.update(dict.fromkeys(pred.steps))
            needs[sid] = tuple(found)
        return cls(run_id, dag, inputs, Scheduler(dag), needs)

    def queue(self, step_id: str) -> str:
        return self.dag.steps[step_id].queue or DEFAULT_QUEUE

    def time_limit_ms(self, step_id: str, tool_timeout: float | None) -> int | None:
        t = self.dag.steps[step_id].timeout or tool_timeout
        return None if t is None else int(t * 1000)
