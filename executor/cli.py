"""The `dagrelay` command line: run, validate and draw flows.

Exit codes: 0 ok; 1 the flow failed or is invalid; 2 a usage error, a missing file, bad
`--input` JSON or a tools module that cannot be imported. Every error is reported on
stderr as `error: ...`, never as a Python traceback (set `DAGRELAY_DEBUG=1` to get one
for unexpected errors).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from executor import __version__
from executor.client import FlowExecutor
from executor.diagram import render_graph
from executor.errors import DagrelayError, FlowFailedError, FlowValidationError
from executor.flow import Flow, load_flow
from executor.handle import RunHandle
from executor.report import print_run_report
from executor.result import TERMINAL_STEP, ExecutionResult
from executor.tools import ToolRegistry, load_tools
from executor.validation import validate_flow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="dagrelay",
    help="Run DAG flows of typed tools, in-process or on Dramatiq workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


FlowArg = Annotated[
    str, typer.Argument(help="Flow file (.yaml, .yml or .json).", show_default=False)
]
ToolsOpt = Annotated[
    str | None,
    typer.Option(
        "--tools",
        "-t",
        envvar="DAGRELAY_TOOLS",
        show_envvar=True,
        help="Tools module to import: a dotted name (examples.tools) or a .py file.",
    ),
]


# Errors -------------------------------------------------------------------------------
def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(text: str) -> str:
    """Text with its whitespace (newlines included) collapsed, for a one-line message."""
    return " ".join(str(text).split())


@contextmanager
def _guard() -> Iterator[None]:
    """Turn every error into one `error:` message and the matching exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except FlowValidationError as exc:
        fail(str(exc), EXIT_FAILED)
    except DagrelayError as exc:
        fail(one_line(str(exc)), EXIT_FAILED)
    except Exception as exc:
        if os.environ.get("DAGRELAY_DEBUG"):
            raise
        fail(
            one_line(f"unexpected {type(exc).__name__}: {exc}")
            + " (set DAGRELAY_DEBUG=1 for the traceback)",
            EXIT_FAILED,
        )


# Loading what a command needs ----------------------------------------------------------
def read_flow(path: str) -> Flow:
    """Load a flow file; a file that is not there (or not readable) is a usage error."""
    p = Path(path)
    if not p.exists():
        fail(f"{path}: no such file", EXIT_USAGE)
    if p.is_dir():
        fail(f"{path}: is a directory, not a flow file", EXIT_USAGE)
    if not os.access(p, os.R_OK):
        fail(f"{path}: cannot read (permission denied)", EXIT_USAGE)
    return load_flow(p)  # FlowValidationError names the file: exit 1


def read_tools(module: str | None) -> ToolRegistry:
    """Import the tools module and return its registry (usage error if it fails)."""
    if not module:
        fail("--tools MODULE is required (or set DAGRELAY_TOOLS)", EXIT_USAGE)
    try:
        return load_tools(module)
    except DagrelayError as exc:
        fail(one_line(str(exc)), EXIT_USAGE)


def parse_inputs(text: str | None, file: str | None) -> dict[str, Any]:
    """The run's input from `--input` JSON or `--input-file` (`-` reads stdin)."""
    if text is not None and file is not None:
        fail("use either --input or --input-file, not both", EXIT_USAGE)
    where = "--input"
    if file is not None:
        where = "stdin" if file == "-" else file
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            fail(f"{file}: no such file", EXIT_USAGE)
        except (OSError, UnicodeDecodeError) as exc:
            fail(one_line(f"{file}: cannot read: {exc}"), EXIT_USAGE)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", 2)
    except RecursionError:
        fail(f"{where}: JSON nested too deeply", EXIT_USAGE)
    if not isinstance(data, dict):
        fail(f"{where}: the input must be a JSON object, not {type(data).__name__}", 2)
    return data


def make_executor(registry: ToolRegistry, redis_url: str | None) -> FlowExecutor:
    """An executor, in-process or on Redis; a Redis that cannot be reached is exit 2."""
    try:
        return FlowExecutor(redis_url or None, registry=registry)
    except (NotImplementedError, DagrelayError) as exc:
        fail(one_line(str(exc)), EXIT_USAGE)


def stdout_console() -> Console:
    """The console for reports: wide when piped, so tables do not wrap at 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=160)
    return console


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
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="The run's input as a JSON object."),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option("--input-file", help="Read the input JSON from a file ('-': stdin)."),
    ] = None,
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
) -> None:
    """Run a flow and show each step's status and timing.

    Exit code 0 if the run succeeded, 1 if it failed or is invalid, 2 on usage errors.
    """
    with _guard():
        if not tools:
            fail("--tools MODULE is required (or set DAGRELAY_TOOLS)", EXIT_USAGE)
        data = parse_inputs(input, input_file)
        flow_obj = read_flow(flow)
        registry = read_tools(tools)
        with make_executor(registry, redis) as executor:
            validate_flow(flow_obj, registry, source=flow)  # every problem, naming the file
            try:
                handle = executor.submit(flow_obj, data)
            except FlowValidationError as exc:  # the input does not fit: name the flow file
                raise FlowValidationError(exc.problems, exc.source or flow) from None
            # Live progress goes where the report goes, unless stdout is reserved for JSON.
            progress_console = Console(stderr=True) if json_output else stdout_console()
            try:
                result = follow(handle, flow_obj, progress_console)
            except KeyboardInterrupt:
                handle.cancel()
                result = handle.wait(30)
                show_result(result, json_output)
                fail(f"interrupted: run {result.run_id} {result.status}", EXIT_INTERRUPTED)
        show_result(result, json_output)
        if not result.succeeded:
            fail(one_line(str(FlowFailedError(result))), EXIT_FAILED)


def follow(handle: RunHandle, flow: Flow, console: Console) -> ExecutionResult:
    """Wait for the run, with a live progress bar fed by its events on a terminal."""
    if not console.is_terminal:
        return handle.wait()
    statuses: dict[str, str] = {}
    steps = {s.id for s in flow.steps}
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]} · failed {task.fields[failed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(escape(flow.name), total=len(flow.steps), running=0, failed=0)
        for event in handle.events():
            if event.step_id is None:
                break
            if event.step_id not in steps:  # a map item: its step's events tell the story
                continue
            statuses[event.step_id] = "running" if event.status == "retrying" else event.status
            progress.update(
                task,
                completed=sum(s in TERMINAL_STEP for s in statuses.values()),
                running=sum(s == "running" for s in statuses.values()),
                failed=sum(s in ("failed", "upstream_failed") for s in statuses.values()),
            )
    return handle.wait()


def show_result(result: ExecutionResult, json_output: bool) -> None:
    if json_output:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_run_report(stdout_console(), result)


@app.command()
def validate(flow: FlowArg, tools: ToolsOpt = None) -> None:
    """Check a flow: its structure, and with --tools its tools and their inputs.

    Exit code 0 if valid, 1 (listing every problem) if not, 2 on usage errors.
    """
    with _guard():
        flow_obj = read_flow(flow)
        registry = read_tools(tools) if tools else None
        dag = validate_flow(flow_obj, registry, source=flow)
        edges = sum(len(d) for d in dag.deps.values())
        checked = (
            f"tools and inputs checked against {tools}"
            if registry is not None
            else "structure only; pass --tools to check tools and inputs"
        )
        typer.echo(
            f"ok: {flow}: flow {flow_obj.name!r} v{flow_obj.version}, "
            f"{len(dag.steps)} steps, {edges} edges ({checked})"
        )


@app.command()
def graph(
    flow: FlowArg,
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
) -> None:
    """Draw a flow's DAG as mermaid or graphviz dot.

    Map steps, conditions and trigger rules are marked; depends_on-only edges are dashed.
    """
    with _guard():
        flow_obj = read_flow(flow)
        result = read_result(result_file, flow_obj) if result_file else None
        dag = validate_flow(flow_obj, None, source=flow)
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
    try:
        result = ExecutionResult.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        fail(f"{path}: no such file", EXIT_USAGE)
    except OSError as exc:
        fail(one_line(f"{path}: cannot read: {exc.strerror or exc}"), EXIT_USAGE)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<file>"
        fail(one_line(f"{path}: not an ExecutionResult: {where}: {first['msg']}"), EXIT_USAGE)
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
    processes: Annotated[int, typer.Option("--processes", "-p", min=1)] = 1,
    threads: Annotated[int, typer.Option("--threads", min=1)] = 8,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queues", "-Q", help="Queues to serve (repeat, or comma-separated)."),
    ] = None,
) -> None:
    """Run Dramatiq worker processes that execute flow steps (distributed mode)."""
    from executor.launch import run_worker  # only the worker needs the launcher

    with _guard():
        if not tools:
            fail("--tools MODULE is required (or set DAGRELAY_TOOLS)", EXIT_USAGE)
        names = [q for part in queues or () for q in part.replace(",", " ").split()]
        try:
            code = run_worker(tools, redis, processes, threads, names)
        except DagrelayError as exc:  # the tools module does not import
            fail(one_line(str(exc)), EXIT_USAGE)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
