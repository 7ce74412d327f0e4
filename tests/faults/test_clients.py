"""A client that dies after submitting: the run is Redis's and the workers', not its."""

from __future__ import annotations

import pytest

from executor import ExecutionResult
from tests.faults.support import WAIT, kill_process, spawn, trace, wait_until
from tests.support.servers import python

pytestmark = pytest.mark.timeout(180)

SUBMIT_AND_WAIT = """
    import sys
    from executor import Flow, FlowExecutor, Step
    from tests import fault_tools

    log = sys.argv[2]
    flow = Flow(
        name="orphan",
        steps=[
            Step(id="a", tool="traced", inputs={"log": log, "seconds": 1.0, "value": 20}),
            Step(id="b", tool="traced", inputs={"log": log, "seconds": 0.5, "value": "$steps.a"}),
            Step(id="c", tool="add", inputs={"a": "$steps.b", "b": 1}),
        ],
        output="$steps.c",
    )
    ex = FlowExecutor(sys.argv[1], registry=fault_tools.registry)
    handle = ex.submit(flow)
    print(handle.run_id, flush=True)
    handle.wait()  # killed while it waits
"""

GET_RUN = """
    import sys
    from executor import FlowExecutor
    with FlowExecutor(sys.argv[1]) as ex:
        print(ex.get_run(sys.argv[2]).wait(timeout=60).model_dump_json())
"""


def test_a_client_killed_after_submit_does_not_stop_its_run(make_cluster, tmp_path):
    c = make_cluster()
    c.start_workers(1)
    log = str(tmp_path / "trace")
    client = spawn(SUBMIT_AND_WAIT, c.url, log)
    try:
        assert client.stdout is not None
        run_id = client.stdout.readline().strip()
        assert run_id, client.stderr.read() if client.stderr else ""
        assert wait_until(lambda: len(trace(log)) >= 1), c.logs()
    finally:
        kill_process(client)  # SIGKILL, mid-wait, before the run ends
    assert client.returncode == -9
    proc = python(GET_RUN, c.url, run_id, timeout=WAIT + 30)
    assert proc.returncode == 0, proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout.strip().splitlines()[-1])
    assert result.run_id == run_id
    assert result.status == "succeeded" and result.output == 21
    assert [len(r.attempts) for r in result.steps.values()] == [1, 1, 1]
    assert [k for k, _, _ in trace(log)] == ["start", "end", "start", "end"]
