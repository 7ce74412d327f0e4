"""`dagrelay retry`: run a finished run again, in place, reusing what succeeded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from executor.cli.common import (
    DEFAULT_REDIS_URL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    RedisOpt,
    ToolsOpt,
    check_run_id,
    fail,
    guard,
    is_python_flow,
    load_result,
    make_executor,
    one_line,
    read_flow,
    read_tools,
    redis_errors,
    redis_url,
    show_result,
)
from executor.handle import RunHandle
from executor.model.tools import ToolRegistry, default_registry
from executor.result import FlowFailedError


def retry(
    run: Annotated[
        str,
        typer.Argument(
            help="A run id in Redis, or a result saved as JSON (`run --json`) to rerun "
            "in-process with --flow.",
            show_default=False,
        ),
    ],
    from_steps: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            metavar="STEP",
            help="Run this step again even if it succeeded, and every step after it (repeatable).",
        ),
    ] = None,
    flow: Annotated[
        str | None,
        typer.Option("--flow", help="A saved result's flow (file or module:name)."),
    ] = None,
    tools: ToolsOpt = None,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print only the ExecutionResult as JSON.")
    ] = False,
) -> None:
    """Run a finished run again: its failed, cancelled and skipped-by-failure steps run
    again, its successes are reused, earlier attempts stay in the records.

    A run in Redis keeps its id (the workers run it); a saved result runs in-process.

    Exit code 0 if the run succeeded, 1 if it failed or cannot be rerun, 2 on usage
    errors.
    """
    with guard():
        steps = from_steps or []
        if run.endswith(".json") or Path(run).is_file():
            if flow is None:
                fail("--flow FLOW is needed to rerun a saved result in-process", EXIT_USAGE)
            previous = load_result(run)
            flow_obj = read_flow(flow)
            python_flow = is_python_flow(flow)
            if not tools and not python_flow:
                fail("--tools MODULE is required (or set DAGRELAY_TOOLS)", EXIT_USAGE)
            registry = read_tools(tools) if tools else default_registry
            with make_executor(registry, None) as executor:
                _finish(executor.submit_rerun(previous, flow_obj, from_steps=steps), json_output)
            return
        rid = check_run_id(run)
        url = redis_url(redis)
        with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
            _finish(executor.submit_rerun(rid, from_steps=steps), json_output)


def _finish(handle: RunHandle, json_output: bool) -> None:
    try:
        result = handle.wait()
    except KeyboardInterrupt:
        handle.cancel()
        fail(f"interrupted: run {handle.run_id} cancelled", EXIT_INTERRUPTED)
    show_result(result, json_output)
    if not result.succeeded:
        fail(one_line(str(FlowFailedError(result))), EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add `retry` to the `dagrelay` app."""
    app.command()(retry)
