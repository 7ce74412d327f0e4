"""The `dagrelay` command line: run, validate and draw flows; run and watch workers.

Exit codes: 0 ok; 1 the flow failed or is invalid (its input too large, say); 2 a usage
error, a missing file, bad `--input` JSON, a tools module that cannot be imported, an
unknown run (or one whose state vanished from Redis) or a Redis that cannot be reached;
130 interrupted. `dagrelay worker`: 0 stopped, 2 misconfigured (see workers.supervisor).
Every error is reported on stderr as `error: ...`, never as a Python traceback (set
`DAGRELAY_DEBUG=1` to get one for unexpected errors).

The commands on runs in Redis (submit, status, result, cancel, runs) live in
`executor.cli.runs`, the timeline picture (`report`) in `executor.cli.report`; the helpers
these modules share live in `executor.cli.common`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from executor.cli import fleet as cli_fleet
from executor.cli import report as cli_report
from executor.cli import retry as cli_retry
from executor.cli import runs as cli_runs
from executor.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FlowArg,
    InputFileOpt,
    InputOpt,
    ToolsOpt,
    check_run_id,
    fail,
    flags_as_flags,
    guard,
    is_python_flow,
    load_result,
    make_executor,
    one_line,
    parse_inputs,
    read_flow,
    read_tools,
    redis_errors,
    redis_url,
    run_app,
    show_result,
    stdout_console,
    submit_flow,
)
from executor.cli.interrupt import cancel_on_interrupt, exit_now
from executor.cli.live import watch
from executor.errors import DagrelayError
from executor.handle import RunHandle
from executor.model.flow import Flow
from executor.model.tools import ToolRegistry, default_registry
from executor.model.validation import validate_flow
from executor.observability import logs
from executor.result import ExecutionResult, FlowFailedError
from executor.version import __version__
from executor.views.diagram import render_graph

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "app", "follow", "main"]

# The one table of exit codes (README "Exit codes" says the same).
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the flow failed or is invalid (an input over "
    "DAGRELAY_MAX_INPUT_BYTES too); 2 usage error: a missing file, bad input JSON, tools "
    "that do not import, an unknown run or one gone from Redis, Redis unreachable or "
    "refusing the password; 130 interrupted."
)

flags_as_flags()
app = typer.Typer(
    name="dagrelay",
    help="Run DAG flows of typed tools, in-process or on Dramatiq workers.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


# Commands -------------------------------------------------------------------------------
def _version(value: bool) -> None:
    if value:
        typer.echo(f"dagrelay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Run DAG flows of typed tools, in-process or on Dramatiq workers."""


@app.command()
def run(
    flow: FlowArg,
    tools: ToolsOpt = None,
    input: InputOpt = None,
    input_file: InputFileOpt = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print only the ExecutionResult as JSON on stdout."),
    ] = False,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            envvar="DAGRELAY_REDIS_URL",
            show_envvar=True,
            help="Run on Dramatiq workers through this Redis (default: in-process).",
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report",
            metavar="FILE",
            help="Also write the run's timeline page here (.html; .svg: the chart alone).",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            metavar="SECONDS",
            help="On Ctrl-C, wait this long for running steps to stop before exiting.",
        ),
    ] = 10.0,
    no_worker_timeout: Annotated[
        float | None,
        typer.Option(
            "--no-worker-timeout",
            min=0,
            metavar="SECONDS",
            help="With --redis: fail a step that no live worker serves (its queue with its "
            "tool) after this long (default: just before the flow's timeout; without one, "
            "it waits, and a warning says so within seconds).",
        ),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            help="With --redis: Ctrl-C stops watching and leaves the run going on the "
            "workers (default: Ctrl-C cancels it).",
        ),
    ] = False,
) -> None:
    """Run a flow and show each step's status and timing.

    In-process by default; with --redis on the workers serving that Redis (then --tools
    is optional: the workers have the tools, and the flow's structure is checked here).

    Ctrl-C cancels the run (in-process, and with --redis on every worker) and waits up
    to --grace seconds for its running steps to stop; a second Ctrl-C exits at once.
    With --redis --detach, Ctrl-C only stops watching: the run goes on (see `dagrelay
    status RUN`, `dagrelay cancel RUN`). SIGTERM ends this command without cancelling:
    with --redis the run goes on on the workers.

    Exit code 0 if the run succeeded, 1 if it failed or is invalid, 2 on usage errors
    (and when the run's state vanished from Redis while it ran: no result to give).
    """
    with guard():
        url = (redis or "").strip() or None
        # A Python flow's module imports its tools (into the default registry).
        python_flow = is_python_flow(flow)
        if not tools and url is None and not python_flow:
            fail(
                "--tools MODULE is required (or set DAGRELAY_TOOLS); it is optional with --redis",
                EXIT_USAGE,
            )
        data = parse_inputs(input, input_file)
        flow_obj = read_flow(flow)
        known = tools or python_flow
        registry = (
            read_tools(tools) if tools else default_registry if python_flow else ToolRegistry()
        )
        # Every problem at once, naming the file; without --tools (workers only) the
        # structure, while the executor checks the inputs of the tools it knows.
        validate_flow(flow_obj, registry if known else None, source=flow)
        if detach and url is None:
            fail("--detach needs --redis: an in-process run ends with this command", EXIT_USAGE)
        with make_executor(registry, url) as executor, redis_errors(url):
            handle = submit_flow(executor, flow_obj, data, flow)
            # Live progress goes where the report goes, unless stdout is reserved for JSON.
            progress_console = Console(stderr=True) if json_output else stdout_console()
            watching: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if url is not None:
                if no_worker_timeout is None and flow_obj.timeout:
                    # Just before the run's own timeout, so the step says why it failed.
                    no_worker_timeout = max(0.0, flow_obj.timeout - min(1.0, flow_obj.timeout / 4))
                watching = cli_fleet.watch_unserved(url, handle.run_id, no_worker_timeout)
            try:
                with watching:
                    result = follow(handle, flow_obj, progress_console)
            except KeyboardInterrupt:
                if detach:
                    exit_now(f"detached: run {handle.run_id} goes on on the workers")
                result, finish = cancel_on_interrupt(handle, executor, grace, url is not None)
                show_result(result, json_output)
                if report:
                    cli_report.write_report(result, report)
                finish()
        show_result(result, json_output)
        if report:
            kind = cli_report.write_report(result, report)
            if report != "-":
                typer.echo(f"wrote {report} ({kind})", err=True)
        if not result.succeeded:
            fail(one_line(str(FlowFailedError(result))), EXIT_FAILED)


def follow(handle: RunHandle, flow: Flow, console: Console) -> ExecutionResult:
    """Wait for the run, with a live progress bar fed by its events on a terminal."""
    if console.is_terminal:
        watch(handle, console, flow.name, [s.id for s in flow.steps])
    return handle.wait()


@app.command()
def validate(flow: FlowArg, tools: ToolsOpt = None) -> None:
    """Check a flow: its structure, and with --tools its tools and their inputs.

    Exit code 0 if valid, 1 (listing every problem) if not, 2 on usage errors.
    """
    with guard():
        flow_obj = read_flow(flow)
        python_flow = is_python_flow(flow)
        registry = read_tools(tools) if tools else default_registry if python_flow else None
        dag = validate_flow(flow_obj, registry, source=flow)
        edges = sum(len(d) for d in dag.deps.values())
        checked = (
            f"tools and inputs checked against {tools or 'its module'}"
            if registry is not None
            else "structure only; pass --tools to check tools and inputs"
        )
        typer.echo(
            f"ok: {flow}: flow {flow_obj.name!r} v{flow_obj.version}, "
            f"{len(dag.steps)} steps, {edges} edges ({checked})"
        )


@app.command()
def graph(
    flow: Annotated[
        str | None,
        typer.Argument(
            help="Flow file (.yaml, .yml or .json); with --run, optional: the run's own flow.",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="Diagram language.")
    ] = GraphFormat.mermaid,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    result_file: Annotated[
        str | None,
        typer.Option(
            "--result",
            help="Annotate with a run's status and timing: JSON from `dagrelay run --json`.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run", help="Annotate with this run in Redis (see --redis)."),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis", envvar="DAGRELAY_REDIS_URL", show_envvar=True, help="Redis of --run."
        ),
    ] = None,
) -> None:
    """Draw a flow's DAG as mermaid or graphviz dot.

    Map steps, conditions and trigger rules are marked; depends_on-only edges are dashed.
    With --result or --run, each step shows its status and time, the critical path bold.
    """
    with guard():
        if result_file and run_id:
            fail("use either --result or --run, not both", EXIT_USAGE)
        if flow is None and not run_id:
            fail("give a FLOW file, or --run ID to draw that run's own flow", EXIT_USAGE)
        flow_obj = read_flow(flow) if flow is not None else None
        result = None
        if result_file:
            assert flow_obj is not None
            result = read_result(result_file, flow_obj)
        if run_id:
            rid, url = check_run_id(run_id), redis_url(redis)
            result = cli_report.fetch_result(rid, url, None)
            if flow_obj is None:
                flow_obj = cli_report.fetch_flow(rid, url)
            elif result.flow_name != flow_obj.name:
                fail(f"run {run_id} is of flow {result.flow_name!r}, not {flow_obj.name!r}", 2)
        assert flow_obj is not None
        dag = validate_flow(flow_obj, None, source=flow or f"run {run_id}")
        text = render_graph(flow_obj, format.value, result=result, dag=dag)
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(one_line(f"{output}: cannot write: {exc.strerror or exc}"), EXIT_USAGE)
        typer.echo(f"wrote {output} ({format.value})", err=True)


def read_result(path: str, flow: Flow) -> ExecutionResult:
    """An `ExecutionResult` saved by `dagrelay run --json`, checked to be of `flow`."""
    result = load_result(path)
    if result.flow_name != flow.name:
        fail(f"{path}: is a run of flow {result.flow_name!r}, not {flow.name!r}", EXIT_USAGE)
    return result


@app.command()
def worker(
    tools: ToolsOpt = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis", envvar="DAGRELAY_REDIS_URL", show_envvar=True, help="Redis to serve."
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option("--processes", "-p", min=1, help="Worker processes (Dramatiq's)."),
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=1,
            help="Sync tool calls a process runs at once, whatever brought them (a queued "
            "step, a dependent kept in place, a map item).",
        ),
    ] = 8,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queues", "-Q", help="Queues to serve (repeat, or comma-separated)."),
    ] = None,
    async_steps: Annotated[
        int,
        typer.Option(
            "--async-steps",
            min=0,
            envvar="DAGRELAY_ASYNC_STEPS",
            help="Async tool calls a process runs at once (0: they share the --threads "
            "slots, one each).",
        ),
    ] = 0,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            envvar="DAGRELAY_LOG_LEVEL",
            show_envvar=True,
            case_sensitive=False,
            help="INFO (the default) logs a line per step attempt; WARNING only problems. "
            "DAGRELAY_LOG_FORMAT=json makes every line a JSON object.",
        ),
    ] = None,
) -> None:
    """Run Dramatiq worker processes that execute flow steps (distributed mode).

    Redis is checked first: a refused password or a bad URL exits 2 at once; an
    unreachable Redis is logged (host, never the password) until it answers. A worker
    process that dies is replaced (backing off if it dies again within a minute).
    Exit code 0 after SIGTERM/SIGINT (the processes finish what they run), 2 when
    misconfigured, 1 when a process had to be killed on the way out.
    """
    from executor.cli.launch import run_worker  # only the worker needs the launcher

    with guard():
        if not tools:
            fail("--tools MODULE is required (or set DAGRELAY_TOOLS)", EXIT_USAGE)
        names = [q for part in queues or () for q in part.replace(",", " ").split()]
        url = redis_url(redis) if redis else None  # a malformed URL: say so, here
        if log_level is not None:  # the worker processes read it from their environment
            os.environ["DAGRELAY_LOG_LEVEL"] = log_level.value
        try:
            code = run_worker(tools, url, processes, threads, names, async_steps=async_steps)
        except DagrelayError as exc:  # the tools module does not import
            fail(one_line(str(exc)), EXIT_USAGE)
    raise typer.Exit(code)


cli_runs.register(app)
cli_retry.register(app)
cli_report.register(app)
cli_fleet.register(app)


def main() -> None:
    """Console-script entry point."""
    # Warnings and errors from libraries and tools, with run and step ids when known
    # (DAGRELAY_LOG_FORMAT=json, DAGRELAY_LOG_LEVEL).
    logs.configure(default_level=logging.WARNING)
    run_app(app)


if __name__ == "__main__":
    main()
