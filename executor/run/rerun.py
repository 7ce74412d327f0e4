"""What a rerun of a finished run keeps and what it runs again (both backends).

A rerun keeps every step that succeeded, except the steps it is asked to run from and
what depends on them; every other step is pending again and decided afresh (a skip that
its condition decided comes out the same), its earlier attempts kept in its record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from executor.errors import DagrelayError
from executor.model.dag import Dag
from executor.run.records import TERMINAL_RUN


def rerun_plan(
    dag: Dag, statuses: Mapping[str, str], from_steps: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """The steps a rerun keeps and those it runs again, each in flow order.

    Raises:
        KeyError: a step of `from_steps` is not in the flow.
    """
    again: set[str] = set()
    todo = list(from_steps)
    for sid in todo:
        if sid not in dag.steps:
            raise KeyError(sid)
    while todo:
        sid = todo.pop()
        if sid not in again:
            again.add(sid)
            todo.extend(dag.dependents[sid])
    keep = [s for s in dag.steps if statuses.get(s) == "succeeded" and s not in again]
    kept = set(keep)
    return keep, [s for s in dag.steps if s not in kept]


def plan_rerun(
    run_id: str,
    dag: Dag,
    run_status: str,
    statuses: Mapping[str, str],
    from_steps: Iterable[str] = (),
) -> tuple[list[str], list[str]]:
    """`rerun_plan` for a run in `run_status`, refusing what cannot be rerun.

    Raises:
        DagrelayError: the run is not finished, a step named is not in the flow, or
            nothing would run again.
    """
    if run_status not in TERMINAL_RUN:
        raise DagrelayError(f"run {run_id} is {run_status}: only a finished run can be rerun")
    try:
        keep, again = rerun_plan(dag, statuses, from_steps)
    except KeyError as exc:
        known = ", ".join(dag.steps)
        raise DagrelayError(
            f"run {run_id}: no step {exc.args[0]!r} to rerun from (steps: {known})"
        ) from None
    if not again:
        raise DagrelayError(
            f"run {run_id} succeeded: nothing to rerun (name steps to rerun from, --from STEP)"
        )
    return keep, again
