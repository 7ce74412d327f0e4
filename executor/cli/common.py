"""What every `dagrelay` command shares: exit codes, error messages, loading inputs.

`executor.cli.main` (run, validate, graph, worker) and `executor.cli.runs` (submit, status,
result, cancel, runs) both build on these, so the two modules never import each other
at import time.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from rich.console import Console

from executor.client import FlowExecutor
from executor.errors import DagrelayError, FlowValidationError, RunNotFoundError
from executor.handle import RunHandle
from executor.model.authoring import import_flow, is_flow_name
from executor.model.flow import Flow, load_flow
from executor.model.tools import ToolRegistry, load_tools
from executor.result import ExecutionResult
from executor.views.report import print_run_report

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")

FlowArg = Annotated[
    str,
    typer.Argument(
        help="Flow file (.yaml, .yml or .json), or a Python flow as module:name.",
        show_default=False,
    ),
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
InputOpt = Annotated[
    str | None, typer.Option("--input", "-i", help="The run's input as a JSON object.")
]
InputFileOpt = Annotated[
    str | None,
    typer.Option("--input-file", help="Read the input JSON from a file ('-': stdin)."),
]
RedisOpt = Annotated[
    str,
    typer.Option(
        "--redis",
        envvar="DAGRELAY_REDIS_URL",
        show_envvar=True,
        help="The Redis that holds the runs (the workers' Redis).",
    ),
]
RunArg = Annotated[str, typer.Argument(help="A run id (from `dagrelay submit` or `runs`).")]


# Errors -------------------------------------------------------------------------------
def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line(text: str) -> str:
    """Text with its whitespace (newlines included) collapsed, for a one-line message."""
    return " ".join(str(text).split())


@contextmanager
def guard() -> Iterator[None]:
    """Turn every error into one `error:` message and the matching exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except FlowValidationError as exc:
        fail(str(exc), EXIT_FAILED)
    except RunNotFoundError as exc:
        fail(one_line(str(exc)), EXIT_USAGE)
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
def is_python_flow(flow: str) -> bool:
    """Whether a command-line FLOW names a Python flow (`module:name`, no such file); its
    module imports its tools into the default registry."""
    return is_flow_name(flow) and not Path(flow).exists()


def read_flow(path: str) -> Flow:
    """Load a flow file, or a Python flow named `module:name`; a file that is not there
    (or not readable) is a usage error."""
    p = Path(path)
    if is_python_flow(path):
        try:
            return import_flow(path)
        except FlowValidationError:
            raise
        except DagrelayError as exc:
            fail(one_line(str(exc)), EXIT_USAGE)
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


def check_run_id(run_id: str) -> str:
    """A run id from the user, checked before it goes anywhere near a Redis key."""
    from executor.client import new_run_id

    try:
        return new_run_id(run_id)
    except FlowValidationError as exc:
        fail(f"invalid run id: {one_line(str(exc))}", EXIT_USAGE)


# Redis -----------------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """A Redis URL without its password, even when the URL is malformed."""
    from executor.backends.redis.backend import redact

    try:
        return redact(url)
    except ValueError:  # e.g. a port that is not a number
        return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url)


def redis_url(value: str | None) -> str:
    """The `--redis` URL (or DAGRELAY_REDIS_URL, or the default), checked for its form."""
    url = (value or "").strip() or DEFAULT_REDIS_URL
    try:
        parts = urlsplit(url)
        if not parts.scheme.endswith("+sentinel"):  # a list of sentinels: checked below
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        fail(f"invalid Redis URL {redact_url(url)}: {one_line(str(exc))}", EXIT_USAGE)
    if parts.scheme not in REDIS_SCHEMES:
        fail(
            f"invalid Redis URL {redact_url(url)}: it must start with redis://, rediss://, "
            "unix:// or redis+sentinel://",
            EXIT_USAGE,
        )
    if parts.scheme.endswith("+sentinel"):
        from executor.backends.redis.urls import sentinel_parts

        try:
            sentinel_parts(url)
        except ValueError as exc:
            fail(f"invalid Redis URL {redact_url(url)}: {one_line(str(exc))}", EXIT_USAGE)
    return url


def make_executor(registry: ToolRegistry, url: str | None) -> FlowExecutor:
    """An executor, in-process or on Redis; a Redis that cannot be reached is exit 2."""
    try:
        return FlowExecutor(redis_url(url) if url else None, registry=registry)
    except (NotImplementedError, DagrelayError) as exc:
        fail(one_line(str(exc)), EXIT_USAGE)


@contextmanager
def redis_errors(url: str | None) -> Iterator[None]:
    """Redis going away in the middle of a command: one line naming it, exit 2."""
    if not url:
        yield
        return
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        fail(one_line(f"cannot reach Redis at {redact_url(url)}: {exc}"), EXIT_USAGE)


# Output ---------------------------------------------------------------------------------
def stdout_console() -> Console:
    """The console for reports: wide when piped, so tables do not wrap at 80 columns."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=160)
    return console


def show_result(result: ExecutionResult, json_output: bool) -> None:
    """The result as JSON, or as the step table, output and summary."""
    if json_output:
        typer.echo(result.model_dump_json(indent=2))
    else:
        print_run_report(stdout_console(), result)


def submit_flow(
    executor: FlowExecutor,
    flow: Flow,
    inputs: dict[str, Any],
    source: str,
    run_id: str | None = None,
) -> RunHandle:
    """Start a run; an input that does not fit the flow is reported naming its file."""
    try:
        return executor.submit(flow, inputs, run_id=run_id)
    except FlowValidationError as exc:
        raise FlowValidationError(exc.problems, exc.source or source) from None


def load_result(path: str) -> ExecutionResult:
    """An `ExecutionResult` saved as JSON (`run --json`, `result --json`, the API)."""
    try:
        return ExecutionResult.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        fail(f"{path}: no such file", EXIT_USAGE)
    except IsADirectoryError:
        fail(f"{path}: is a directory, not a result file", EXIT_USAGE)
    except OSError as exc:
        fail(one_line(f"{path}: cannot read: {exc.strerror or exc}"), EXIT_USAGE)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<file>"
        fail(one_line(f"{path}: not an ExecutionResult: {where}: {first['msg']}"), EXIT_USAGE)


# The command line itself ------------------------------------------------------------------
def flags_as_flags() -> None:
    """Help shows a boolean flag as the flag alone, not `<bool>` (typer 0.2x's help
    names every option's type; a flag takes no value to name)."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "dagrelay", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.dagrelay = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


# Click's exception class, whether typer vendors click or depends on it.
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def run_app(app: typer.Typer) -> NoReturn:
    """Run the app; a usage error (an unknown option, a bad choice...) is one line."""
    try:
        code = app(standalone_mode=False)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {usage_message(message)}{hint}", err=True)
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except (typer.Abort, EOFError):
        typer.echo("error: aborted", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def usage_message(message: str) -> str:
    """Click's message without pydantic's 'Value error, ' and on one line."""
    text = one_line(message.replace("Value error, ", ""))
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
