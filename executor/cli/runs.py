"""`dagrelay` commands on runs in Redis: submit, status, result, cancel, runs.

They work from any machine that reaches the workers' Redis (`--redis URL`, or
`DAGRELAY_REDIS_URL`, else redis://localhost:6379/0). The client needs no tools: the
workers have them. `--tools` only adds checks of the inputs of the tools it defines.

Exit codes: 0 ok (for `status`: succeeded or still going); 1 the flow is invalid, or the
run did not succeed; 2 usage errors: a missing file, bad input, a malformed run id, an
unknown run, or a Redis that cannot be reached (named, password hidden).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer

from executor.cli.common import (
    DEFAULT_REDIS_URL,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FlowArg,
    InputFileOpt,
    InputOpt,
    RedisOpt,
    RunArg,
    ToolsOpt,
    check_run_id,
    fail,
    guard,
    make_executor,
    one_line,
    parse_inputs,
    read_flow,
    read_tools,
    redis_errors,
    redis_url,
    show_result,
    stdout_console,
    submit_flow,
)
from executor.cli.fleet import unserved_lines
from executor.cli.live import watch
from executor.client import FlowExecutor
from executor.errors import RunNotFoundError
from executor.model.tools import ToolRegistry
from executor.model.validation import validate_flow
from executor.result import ExecutionResult, FlowFailedError
from executor.run.records import TERMINAL_RUN
from executor.views.report import runs_table, status_line

SCAN_LIMIT = 10_000  # runs looked at when filtering by status or flow


class RunState(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


def submit(
    flow: FlowArg,
    tools: ToolsOpt = None,
    input: InputOpt = None,
    input_file: InputFileOpt = None,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Use this run id (letters, digits, - and _)."),
    ] = None,
) -> None:
    """Start a flow on the workers and print its run id (only the id, on stdout).

    Exit code 0 once the run is created, 1 if the flow or input is invalid, 2 on usage
    errors (a run id that is taken, a Redis that cannot be reached...).
    """
    with guard():
        data = parse_inputs(input, input_file)
        rid = check_run_id(run_id) if run_id is not None else None
        flow_obj = read_flow(flow)
        registry = read_tools(tools) if tools else ToolRegistry()
        validate_flow(flow_obj, registry if tools else None, source=flow)
        url = redis_url(redis)
        with make_executor(registry, url) as executor, redis_errors(url):
            if rid is not None and _exists(executor, rid):
                fail(f"run id {rid!r} is taken: pick another, or leave --run-id out", EXIT_USAGE)
            handle = submit_flow(executor, flow_obj, data, flow, rid)
        typer.echo(handle.run_id)


def _exists(executor: FlowExecutor, run_id: str) -> bool:
    try:
        executor.get_run(run_id)
    except RunNotFoundError:
        return False
    return True


def status(
    run_id: RunArg,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Print the run's events until it finishes."),
    ] = False,
) -> None:
    """One line about a run: flow, status, steps done; --follow streams its events.

    Exit code 0 if the run succeeded or is still going, 1 if it failed, was cancelled or
    timed out, 2 if there is no such run.
    """
    with guard():
        rid = check_run_id(run_id)
        url = redis_url(redis)
        console = stdout_console()
        with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
            handle = executor.get_run(rid)
            if follow:
                # Event lines as they come; on a terminal also a live progress bar.
                now = handle.result()
                try:
                    watch(
                        handle,
                        console,
                        now.flow_name,
                        list(now.steps),
                        lines=True,
                        started=now.started_at,
                    )
                except KeyboardInterrupt:
                    raise typer.Exit(EXIT_INTERRUPTED) from None
            result = handle.result()
        console.print(status_line(result), soft_wrap=True)
        if result.status not in TERMINAL_RUN:
            for line in unserved_lines(url, rid):
                typer.echo(f"warning: {line}", err=True)
        if result.status in TERMINAL_RUN and not result.succeeded:
            raise typer.Exit(EXIT_FAILED)


def result(
    run_id: RunArg,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print only the ExecutionResult as JSON on stdout."),
    ] = False,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", min=0, help="Wait up to SECONDS for the run to finish.", metavar="SECONDS"
        ),
    ] = None,
) -> None:
    """A run's step table and summary, as `run` prints them (or its JSON with --json).

    Exit code 0 if the run succeeded, 1 if it failed or has not finished (yet), 2 if
    there is no such run.
    """
    with guard():
        rid = check_run_id(run_id)
        url = redis_url(redis)
        with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
            handle = executor.get_run(rid)
            res = _wait(handle.result, handle.wait, handle.done, wait)
        show_result(res, json_output)
        if res.status not in TERMINAL_RUN:
            waited = f" after waiting {wait:g}s" if wait else ""
            fail(f"run {rid} is still {res.status}{waited}", EXIT_FAILED)
        if not res.succeeded:
            fail(one_line(str(FlowFailedError(res))), EXIT_FAILED)


def _wait(
    result: Callable[[], ExecutionResult],
    wait_for: Callable[[float], ExecutionResult],
    done: Callable[[], bool],
    seconds: float | None,
) -> ExecutionResult:
    """The result, after waiting up to `seconds` for the run to finish (None: no wait)."""
    if not seconds or done():
        return result()
    try:
        return wait_for(seconds)
    except TimeoutError:
        return result()
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def cancel(
    run_id: RunArg,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="Wait up to SECONDS for running steps to stop (0: do not wait).",
        ),
    ] = 10.0,
) -> None:
    """Cancel a run: nothing new starts, running steps are stopped. Prints its status.

    Exit code 0 (also when the run had finished already), 2 if there is no such run.
    """
    with guard():
        rid = check_run_id(run_id)
        url = redis_url(redis)
        with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
            handle = executor.get_run(rid)
            before = handle.status()
            if before in TERMINAL_RUN:
                typer.echo(f"{rid} {before} (finished already: nothing to cancel)")
                return
            handle.cancel()
            after = handle.status()
            if after not in TERMINAL_RUN and wait > 0:
                try:
                    after = handle.wait(wait).status
                except TimeoutError:
                    after = handle.status()
                except KeyboardInterrupt:
                    raise typer.Exit(EXIT_INTERRUPTED) from None
        if after in TERMINAL_RUN:
            typer.echo(f"{rid} {after}")
        else:
            typer.echo(f"{rid} cancelling (its running steps are stopping)")


def runs(
    redis: RedisOpt = DEFAULT_REDIS_URL,
    status: Annotated[
        RunState | None, typer.Option("--status", "-s", help="Only runs with this status.")
    ] = None,
    flow: Annotated[
        str | None, typer.Option("--flow", help="Only runs of the flow with this name.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N runs.")] = 20,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the runs as a JSON list.")
    ] = False,
) -> None:
    """Recent runs, newest first: id, flow, status, when submitted, wall time."""
    with guard():
        url = redis_url(redis)
        filtered = status is not None or flow is not None
        with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
            found = executor.list_runs(max(limit, SCAN_LIMIT) if filtered else limit)
        found = [
            (rid, info)
            for rid, info in found
            if (status is None or info.get("status") == status.value)
            and (flow is None or info.get("flow_name") == flow)
        ][:limit]
        if json_output:
            rows = [
                {
                    "run_id": rid,
                    **info,
                    "wall_time": float(info["wall_time"]) if info.get("wall_time") else None,
                }
                for rid, info in found
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        if not found:
            typer.echo("no runs" + (" match" if filtered else ""), err=True)
            return
        stdout_console().print(runs_table(found))


def register(app: typer.Typer) -> None:
    """Add these commands to the `dagrelay` app."""
    for command in (submit, status, result, cancel, runs):
        app.command()(command)


__all__ = ["cancel", "register", "result", "runs", "status", "submit"]
