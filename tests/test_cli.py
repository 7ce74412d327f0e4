"""The `dagrelay` command line: run / validate / graph, exit codes and error messages.

Most tests call the typer app in-process with `CliRunner`; a few run the real console
script (and `python -m executor.cli`) in a subprocess, as a user would.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from executor import ExecutionResult, Flow, FlowExecutor, Step, load_flow, load_tools
from executor.cli.main import app, follow
from executor.views.diagram import build_graph, render_graph

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REPORT = str(EXAMPLES / "report.yaml")
BRANCH = str(EXAMPLES / "branch.yaml")
MAP = str(EXAMPLES / "map.yaml")
REPORT_INPUT = '{"user_ids": [1, 2, 3]}'
DAGRELAY = Path(sys.executable).parent / "dagrelay"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for var in ("DAGRELAY_TOOLS", "DAGRELAY_REDIS_URL", "DAGRELAY_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture(scope="module")
def tools_module(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tools file with its own registry (so no name clashes with examples.tools)."""
    name = f"cli_test_tools_{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("tools") / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            """
            from executor import ToolRegistry, tool

            registry = ToolRegistry()

            @tool(registry=registry)
            def double(x: int) -> int:
                return 2 * x

            @tool(registry=registry)
            async def boom(x: int) -> int:
                raise ValueError(f"boom on {x}\\nsecond line of the message")
            """
        )
    )
    return str(path)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def assert_one_error_line(stderr: str, *parts: str) -> None:
    """stderr is exactly one `error: ...` line containing `parts`, and no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for part in parts:
        assert part in lines[0], stderr


DOUBLE_FLOW = """
    name: doubler
    output: $steps.twice
    steps:
      - id: once
        tool: double
        inputs: {x: $input.x}
      - id: twice
        tool: double
        inputs: {x: $steps.once}
"""

FAILING_FLOW = """
    name: failing
    on_failure: continue
    steps:
      - id: ok
        tool: double
        inputs: {x: 1}
      - id: bad
        tool: boom
        inputs: {x: $steps.ok}
      - id: after
        tool: double
        inputs: {x: $steps.bad}
"""


# run -----------------------------------------------------------------------------------
def test_run_prints_the_step_table_and_summary(runner: CliRunner) -> None:
    res = runner.invoke(app, ["run", REPORT, "--tools", "examples.tools", "-i", REPORT_INPUT])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for column in ("step", "tool", "status", "attempts", "queue wait", "duration", "worker"):
        assert column in out
    for sid in ("users", "orders", "prices", "totals", "render", "archive"):
        assert re.search(rf"^\s*{sid}\s+\S+\s+succeeded", out, re.MULTILINE), out
    assert "[2]" in out  # map items are listed under their step
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("succeeded in ")
    assert "step time" in summary and "parallelism" in summary
    assert "critical path" in summary and "→ archive" in summary
    assert '"grand_total": 23.3' in out  # the output, computed in test_examples too
    assert res.stderr == ""


def test_run_json_prints_only_the_result(runner: CliRunner) -> None:
    res = runner.invoke(app, ["run", MAP, "--tools", "examples.tools", "--json", "--input",
                              '{"text": "one two three"}'])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = ExecutionResult.model_validate_json(res.stdout)
    assert result.status == "succeeded"
    assert result.output["order"] == ["one", "two", "three"]
    assert res.stdout.strip() == result.model_dump_json(indent=2)


def test_run_input_file_and_stdin(runner: CliRunner, tmp_path: Path, tools_module: str) -> None:
    flow = write(tmp_path, "double.yaml", DOUBLE_FLOW)
    inputs = write(tmp_path, "in.json", '{"x": 5}')
    res = runner.invoke(app, ["run", flow, "-t", tools_module, "--input-file", inputs, "--json"])
    assert res.exit_code == 0, res.output
    assert ExecutionResult.model_validate_json(res.stdout).output == 20

    res = runner.invoke(
        app, ["run", flow, "-t", tools_module, "--input-file", "-", "--json"], input='{"x": 7}'
    )
    assert res.exit_code == 0, res.output
    assert ExecutionResult.model_validate_json(res.stdout).output == 28


def test_tools_from_the_environment(runner: CliRunner, tmp_path: Path, tools_module: str) -> None:
    flow = write(tmp_path, "double.yaml", DOUBLE_FLOW)
    res = runner.invoke(
        app, ["run", flow, "-i", '{"x": 1}', "--json"], env={"DAGRELAY_TOOLS": tools_module}
    )
    assert res.exit_code == 0, res.output
    assert ExecutionResult.model_validate_json(res.stdout).output == 4


def test_a_failed_run_exits_1_with_one_error_line(
    runner: CliRunner, tmp_path: Path, tools_module: str
) -> None:
    flow = write(tmp_path, "failing.yaml", FAILING_FLOW)
    res = runner.invoke(app, ["run", flow, "--tools", tools_module])
    assert res.exit_code == 1
    assert_one_error_line(res.stderr, "failing", "failed", "boom on 2")
    assert re.search(r"^\s*bad\s+boom\s+failed\s+1\b.*ValueError: boom on 2", res.stdout, re.M)
    assert re.search(r"^\s*after\s+double\s+upstream_failed", res.stdout, re.MULTILINE)
    # The failed step in full: where, the exception, its whole message, the tool's traceback.
    panel = res.stdout[res.stdout.index("✗ bad failed") :]
    assert re.search(r"✗ bad failed · tool boom · attempt 1 · worker \S+", panel)
    assert "ValueError: boom on 2" in panel and "second line of the message" in panel
    assert "Traceback (most recent call last)" in panel and "in boom" in panel
    assert 'raise ValueError(f"boom on {x}' in panel

    res = runner.invoke(app, ["run", flow, "--tools", tools_module, "--json"])
    assert res.exit_code == 1
    result = ExecutionResult.model_validate_json(res.stdout)
    assert result.status == "failed"
    assert result.steps["bad"].error is not None
    assert result.steps["bad"].error.type == "ValueError"


def test_an_invalid_flow_exits_1_naming_every_problem(
    runner: CliRunner, tmp_path: Path, tools_module: str
) -> None:
    flow = write(
        tmp_path,
        "invalid.yaml",
        """
        name: invalid
        steps:
          - id: a
            tool: nope
            inputs: {v: $steps.ghost}
          - id: b
            tool: double
            inputs: {y: 1}
        """,
    )
    res = runner.invoke(app, ["run", flow, "--tools", tools_module])
    assert res.exit_code == 1
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {flow}: ")
    for problem in ("unknown tool 'nope'", "unknown step 'ghost'", "missing required input 'x'"):
        assert problem in res.stderr


def test_missing_inputs_exit_1_naming_the_flow_file(
    runner: CliRunner, tmp_path: Path, tools_module: str
) -> None:
    flow = write(tmp_path, "double.yaml", DOUBLE_FLOW)
    res = runner.invoke(app, ["run", flow, "--tools", tools_module])
    assert res.exit_code == 1
    assert_one_error_line(res.stderr, flow, "$input.x")


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--input", "{nope"], ["--input: invalid JSON at line 1 column 2"]),
        (["--input", "[1, 2]"], ["--input", "JSON object"]),
        (["--input-file", "/no/such/input.json"], ["/no/such/input.json", "no such file"]),
        (["--input", "{}", "--input-file", "x.json"], ["--input", "--input-file"]),
    ],
)
def test_bad_input_exits_2(runner: CliRunner, args: list[str], parts: list[str]) -> None:
    res = runner.invoke(app, ["run", REPORT, "--tools", "examples.tools", *args])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, *parts)
    assert res.stdout == ""


def test_a_bad_flow_file_exits_1_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    flow = write(tmp_path, "broken.yaml", "name: x\nsteps:\n  - id: a\n  tool: b\n")
    for command in (["run", flow, "--tools", "examples.tools"], ["validate", flow]):
        res = runner.invoke(app, command)
        assert res.exit_code == 1
        assert_one_error_line(res.stderr, f"{flow}: invalid YAML at line 4 column 3")


def test_a_missing_flow_file_exits_2(runner: CliRunner) -> None:
    for command in (
        ["run", "no/such/flow.yaml", "--tools", "examples.tools"],
        ["validate", "no/such/flow.yaml"],
        ["graph", "no/such/flow.yaml"],
    ):
        res = runner.invoke(app, command)
        assert res.exit_code == 2
        assert_one_error_line(res.stderr, "no/such/flow.yaml: no such file")


def test_tools_problems_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", REPORT, "-i", REPORT_INPUT])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "--tools", "DAGRELAY_TOOLS")

    res = runner.invoke(app, ["run", REPORT, "--tools", "no_such_tools_module_x"])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "cannot import tools module 'no_such_tools_module_x'")

    broken = write(tmp_path, f"broken_tools_{uuid.uuid4().hex[:8]}.py", "raise RuntimeError('no')")
    res = runner.invoke(app, ["validate", REPORT, "--tools", broken])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "RuntimeError: no")


def test_an_unreachable_redis_is_one_line_and_exit_2(runner: CliRunner) -> None:
    res = runner.invoke(
        app,
        ["run", REPORT, "--tools", "examples.tools", "-i", REPORT_INPUT, "--json"],
        env={"DAGRELAY_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "127.0.0.1:1")
    assert res.stdout == ""


def test_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(app, ["run"]).exit_code == 2
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2
    assert runner.invoke(app, ["graph", REPORT, "--format", "svg"]).exit_code == 2


# validate ------------------------------------------------------------------------------
def test_validate_structure_only_and_with_tools(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", BRANCH])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"ok: {BRANCH}: flow 'review_branch'")
    assert "structure only" in res.stdout

    res = runner.invoke(app, ["validate", BRANCH, "--tools", "examples.tools"])
    assert res.exit_code == 0, res.output
    assert "checked against examples.tools" in res.stdout

    # Unknown tools pass the structural check but not the one against the tools.
    flow = write(
        tmp_path,
        "unknown_tool.yaml",
        """
        name: unknown
        steps:
          - {id: a, tool: not_a_tool, inputs: {x: 1}}
        """,
    )
    assert runner.invoke(app, ["validate", flow]).exit_code == 0
    res = runner.invoke(app, ["validate", flow], env={"DAGRELAY_TOOLS": "examples.tools"})
    assert res.exit_code == 1
    assert_one_error_line(res.stderr, flow, "unknown tool 'not_a_tool'")


def test_validate_reports_a_cycle(runner: CliRunner, tmp_path: Path) -> None:
    flow = write(
        tmp_path,
        "cycle.yaml",
        """
        name: cycle
        steps:
          - {id: a, tool: t, inputs: {x: $steps.b}}
          - {id: b, tool: t, inputs: {x: $steps.a}}
        """,
    )
    res = runner.invoke(app, ["validate", flow])
    assert res.exit_code == 1
    assert_one_error_line(res.stderr, "cycle:")
    assert runner.invoke(app, ["graph", flow]).exit_code == 1


# graph ---------------------------------------------------------------------------------
def mermaid_nodes(text: str) -> dict[str, str]:
    """Step id -> mermaid node id, from the node lines (`s0["users<br/>...`)."""
    found = re.findall(r'^\s+(s\d+)[\[{(]+"([^"<]+)<br/>', text, re.MULTILINE)
    return {sid: node for node, sid in found}


def test_graph_mermaid_has_every_edge(runner: CliRunner) -> None:
    res = runner.invoke(app, ["graph", REPORT])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert text.startswith("flowchart TD\n")
    n = mermaid_nodes(text)
    assert set(n) == {"users", "orders", "prices", "totals", "render", "archive"}
    for a, b in [("orders", "totals"), ("prices", "totals"), ("users", "render"),
                 ("orders", "render"), ("totals", "render")]:  # fmt: skip
        assert f"{n[a]} --> {n[b]}\n" in text
    assert f"{n['render']} -.-> {n['archive']}\n" in text  # depends_on only: dashed
    assert text.count("-->") + text.count("-.->") == 6
    assert "map: $input.user_ids" in text


def test_graph_dot_has_every_edge_and_marks(runner: CliRunner) -> None:
    res = runner.invoke(app, ["graph", BRANCH, "--format", "dot"])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert text.startswith('digraph "review_branch" {')
    for a, b in [("score", "approve"), ("score", "review"), ("approve", "decide"),
                 ("review", "decide")]:  # fmt: skip
        assert f'"{a}" -> "{b}";' in text
    assert "when: steps.score.value >= 0.5" in text
    assert "trigger: none_failed" in text

    res = runner.invoke(app, ["graph", REPORT, "-f", "dot"])
    assert '"render" -> "archive" [style=dashed];' in res.stdout


def test_graph_to_a_file_and_with_a_result(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["run", BRANCH, "-t", "examples.tools", "-i", '{"text": "bad"}', "--json"]
    )
    assert res.exit_code == 0, res.output
    saved = tmp_path / "result.json"
    saved.write_text(res.stdout)

    out = tmp_path / "branch.mmd"
    res = runner.invoke(app, ["graph", BRANCH, "--result", str(saved), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    text = out.read_text()
    n = mermaid_nodes(text)
    assert re.search(rf"class {n['approve']} skipped$", text, re.MULTILINE)
    assert "review opened: bad" not in text  # outputs are not drawn, statuses are
    assert "<br/>succeeded · " in text and "<br/>skipped" in text

    res = runner.invoke(app, ["graph", REPORT, "--result", str(saved)])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "review_branch")


def test_graph_labels_are_escaped() -> None:
    nasty = 'say "hi" <b>#1</b> & `x` \\ done'
    flow = Flow(
        name='quote"flow\\',
        steps=[
            Step(id="end", tool=nasty),  # `end` is a mermaid keyword
            Step(id="b-2", tool="t", inputs={"v": "$steps.end"}, when='input.mode == "x"'),
        ],
    )
    mermaid = render_graph(flow, "mermaid")
    for line in mermaid.splitlines()[2:4]:  # the node lines: one quoted label each
        assert re.fullmatch(r'\s+s\d+(\["[^"]*"\]|\{\{"[^"]*"\}\})', line), line
        assert "<b>" not in line and "`" not in line
    assert "#quot;hi#quot; #lt;b#gt;#35;1#lt;/b#gt; #amp; #96;x#96;" in mermaid
    assert "s0 --> s1" in mermaid

    dot = render_graph(flow, "dot")
    assert 'digraph "quote\\"flow\\\\" {' in dot
    assert 'tool: say \\"hi\\" <b>#1</b> & `x` \\\\ done' in dot
    assert 'when: input.mode == \\"x\\"' in dot
    # Every quoted string is well formed: quotes inside are escaped.
    for line in dot.splitlines()[1:-1]:
        stripped = re.sub(r'"(?:[^"\\]|\\.)*"', "", line)
        assert '"' not in stripped, line


def test_build_graph_marks_ordering_edges_and_critical_path() -> None:
    flow = Flow(
        name="g",
        steps=[
            Step(id="a", tool="t"),
            Step(id="b", tool="t", inputs={"x": "$steps.a"}),
            Step(id="c", tool="t", depends_on=["a", "b"], inputs={"x": "$steps.b.y"}),
        ],
    )
    graph = build_graph(flow)
    edges = {(e.source, e.target): e.ordering for e in graph.edges}
    assert edges == {("a", "b"): False, ("a", "c"): True, ("b", "c"): False}


# the real console script -----------------------------------------------------------------
def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DAGRELAY_TOOLS", "DAGRELAY_REDIS_URL", "DAGRELAY_DEBUG")
    }
    return subprocess.run(
        args, cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not DAGRELAY.exists(), reason="console script not installed")
def test_console_script_demo_command() -> None:
    proc = run_cli(
        str(DAGRELAY), "run", "examples/report.yaml", "--tools", "examples.tools",
        "--input", '{"user_ids": [1, 2, 3]}',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "succeeded in " in proc.stdout and "critical path" in proc.stdout

    proc = run_cli(str(DAGRELAY), "run", "examples/report.yaml", "--input", REPORT_INPUT,
                   "--json", DAGRELAY_TOOLS="examples.tools")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = ExecutionResult.model_validate_json(proc.stdout)
    assert result.status == "succeeded"
    assert json.loads(proc.stdout)["output"]["grand_total"] == 23.3


@pytest.mark.skipif(not DAGRELAY.exists(), reason="console script not installed")
def test_console_script_exit_codes(tmp_path: Path) -> None:
    proc = run_cli(str(DAGRELAY), "run", "examples/report.yaml", "--tools", "examples.tools",
                   "--input", '{"user_ids": [1, -2]}')  # fmt: skip
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "no user with id -2")

    bad = write(tmp_path, "bad.yaml", "name: [unclosed\n")
    proc = run_cli(str(DAGRELAY), "validate", bad)
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, bad, "invalid YAML")

    proc = run_cli(str(DAGRELAY), "run", "examples/report.yaml", "--tools", "examples.tools",
                   "--input", "{'user_ids': [1]}")  # fmt: skip
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "--input: invalid JSON")


def test_python_dash_m_executor_cli() -> None:
    proc = run_cli(sys.executable, "-m", "executor.cli", "validate", "examples/map.yaml",
                   "--tools", "examples.tools")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: examples/map.yaml")

    proc = run_cli(sys.executable, "-m", "executor.cli", "graph", "examples/map.yaml", "-f", "dot")
    assert proc.returncode == 0, proc.stderr
    assert '"split" -> "words";' in proc.stdout and '"words" -> "stats";' in proc.stdout

    proc = run_cli(sys.executable, "-m", "executor.cli", "validate", "missing.yaml")
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "missing.yaml: no such file")


def test_live_progress_on_a_terminal_counts_steps() -> None:
    flow = load_flow(MAP)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with FlowExecutor(registry=load_tools("examples.tools")) as executor:
        handle = executor.submit(flow, {"text": "a live progress bar"})
        result = follow(handle, flow, console)
    assert result.status == "succeeded"
    text = buffer.getvalue()
    assert "word_map" in text and "3/3" in text and "failed 0" in text


def test_worker_needs_importable_tools(runner: CliRunner) -> None:
    res = runner.invoke(app, ["worker"])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "--tools")
    res = runner.invoke(app, ["worker", "--tools", "no_such_tools_module_y"])
    assert res.exit_code == 2
    assert_one_error_line(res.stderr, "no_such_tools_module_y")


def test_names_are_not_rich_markup(runner: CliRunner, tmp_path: Path, tools_module: str) -> None:
    flow = write(tmp_path, "markup.yaml", DOUBLE_FLOW.replace("doubler", '"[/x] odd [bold]name"'))
    res = runner.invoke(app, ["run", flow, "-t", tools_module, "-i", '{"x": 2}'])
    assert res.exit_code == 0, res.output
    assert "[/x] odd [bold]name v1" in res.stdout


@pytest.mark.skipif(not DAGRELAY.exists(), reason="console script not installed")
def test_a_python_flow_runs_by_module_and_name_with_its_input_checked() -> None:
    # The flow's module imports its tools: no --tools needed.
    proc = run_cli(str(DAGRELAY), "run", "examples.flows:word_map", "--json",
                   "--input", '{"text": "two words"}')  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"]["order"] == ["two", "words"]

    proc = run_cli(
        str(DAGRELAY), "run", "examples.flows:word_map", "--input", '{"text": "a", "x": 1}'
    )
    assert proc.returncode == 1
    assert_one_error_line(
        proc.stderr, "examples.flows:word_map: ", "input: unknown field 'x' (fields: text)"
    )

    proc = run_cli(str(DAGRELAY), "run", "examples/map.yaml", "--tools", "examples.tools",
                   "--input", '{"text": 3}')  # fmt: skip
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "input.text: expected string, got integer")

    proc = run_cli(str(DAGRELAY), "run", "examples.flows:no_such_flow")
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "'no_such_flow' in 'examples.flows' is nothing, not a @flow")


@pytest.mark.skipif(not DAGRELAY.exists(), reason="console script not installed")
def test_retry_reruns_a_saved_result_in_process(tmp_path: Path) -> None:
    proc = run_cli(str(DAGRELAY), "run", "examples/report.yaml", "--tools", "examples.tools",
                   "--input", '{"user_ids": [1, -2]}', "--json")  # fmt: skip
    assert proc.returncode == 1
    saved = write(tmp_path, "failed.json", proc.stdout)
    # The saved result fails the same way again (user -2 does not exist): only the
    # failed steps and what depends on them run; the rest is reused.
    proc = run_cli(str(DAGRELAY), "retry", saved, "--flow", "examples/report.yaml",
                   "--tools", "examples.tools", "--json")  # fmt: skip
    assert proc.returncode == 1
    before = ExecutionResult.model_validate_json(Path(saved).read_text())
    after = ExecutionResult.model_validate_json(proc.stdout)
    assert after.run_id == before.run_id
    assert after.steps["prices"].attempts == before.steps["prices"].attempts  # reused
    assert len(after.steps["users"].attempts) == len(before.steps["users"].attempts) + 1
    proc = run_cli(str(DAGRELAY), "retry", saved, "--tools", "examples.tools")
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "--flow FLOW is needed")
