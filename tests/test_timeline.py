"""The timeline picture: `render_svg` / `render_html` (`ExecutionResult.to_svg/to_html`).

Unit tests read the SVG as XML (it must parse: a standalone .svg file) and the page as
text; the last tests render the page in headless Chromium (Debian's `chromium`, which
`make test` installs) and check the screenshot is a real picture and the page shows
the step names.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from executor import Attempt, ExecutionResult, FlowExecutor, StepError, StepRecord, load_flow
from executor.model.tools import load_tools
from executor.views.timeline.chart import COLORS, CRITICAL, build_timeline, render_html, render_svg

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
XSS = '<script>alert("x")</script>'


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def attempt(n: int, a: float, b: float, worker: str, error: StepError | None = None) -> Attempt:
    return Attempt(
        number=n, started_at=t(a), finished_at=t(b), duration=b - a, worker=worker, error=error
    )


def sample() -> ExecutionResult:
    """A failed run on two workers: a retried step, a failure, a cancelled step, a map of
    many items, a skipped and an upstream_failed step, and hostile text everywhere."""
    w1, w2 = "host-a:101:Thread-1", "host-b:202:Thread-3"
    flaky = StepError(type="ConnectionError", message=f"reset {XSS}", traceback="Traceback…")
    boom = StepError(
        type="ValueError",
        message=f"score out of range {XSS}\nsecond line",
        traceback=f'Traceback (most recent call last):\n  File "x.py", line 3\nValueError: {XSS}',
    )
    items = [
        StepRecord(
            step_id=f"thumbs[{i}]",
            tool="thumbnail",
            status="succeeded",
            queued_at=t(0.35),
            started_at=t(0.36 + 0.02 * i),
            finished_at=t(0.46 + 0.02 * i),
            duration=0.1,
            worker=w1,
            attempts=[attempt(1, 0.36 + 0.02 * i, 0.46 + 0.02 * i, w1)],
        )
        for i in range(25)
    ]
    steps = {
        "fetch": StepRecord(
            step_id="fetch",
            tool="http_get",
            status="succeeded",
            queued_at=t(0.0),
            started_at=t(0.02),
            finished_at=t(0.9),
            duration=0.88,
            queue_wait=0.02,
            worker=w2,
            attempts=[attempt(1, 0.02, 0.2, w1, flaky), attempt(2, 0.45, 0.9, w2)],
        ),
        "parse<b>": StepRecord(
            step_id="parse<b>",
            tool="parse_html",
            status="succeeded",
            queued_at=t(0.0),
            started_at=t(0.1),
            finished_at=t(0.35),
            duration=0.25,
            queue_wait=0.1,
            worker=w1,
            attempts=[attempt(1, 0.1, 0.35, w1)],
        ),
        "score": StepRecord(
            step_id="score",
            tool="model_score",
            status="failed",
            queued_at=t(0.9),
            started_at=t(0.95),
            finished_at=t(1.3),
            duration=0.35,
            queue_wait=0.05,
            worker=w2,
            error=boom,
            attempts=[attempt(1, 0.95, 1.3, w2, boom)],
        ),
        "publish": StepRecord(step_id="publish", tool="publish", status="upstream_failed"),
        "notify": StepRecord(step_id="notify", tool="notify", status="skipped"),
        "side": StepRecord(
            step_id="side",
            tool="crunch",
            status="cancelled",
            queued_at=t(0.36),
            started_at=t(0.5),
            finished_at=t(1.31),
            duration=0.81,
            worker=w1,
            error=StepError(type="CancelledError", message="run stopped"),
            attempts=[
                attempt(1, 0.5, 1.31, w1, StepError(type="CancelledError", message="stopped"))
            ],
        ),
        "thumbs": StepRecord(
            step_id="thumbs",
            tool="thumbnail",
            status="succeeded",
            queued_at=t(0.35),
            started_at=t(0.36),
            finished_at=t(0.94),
            duration=0.58,
            worker=w1,
            items=items,
        ),
    }
    return ExecutionResult(
        run_id="sample-1",
        flow_name=f"scoring {XSS}",
        flow_version="3",
        status="failed",
        error=f"step 'score' failed: ValueError: {XSS}",
        steps=steps,
        submitted_at=t(0),
        started_at=t(0),
        finished_at=t(1.32),
        wall_time=1.32,
        step_time=4.79,
        critical_path=["fetch", "score"],
        critical_path_time=1.23,
        parallelism=3.63,
    )


def svg_tree(text: str) -> ET.Element:
    return ET.fromstring(text)


def texts(root: ET.Element) -> list[str]:
    """Every text of the SVG: whole, and its first part (a row's step, without its tool)."""
    found = []
    for e in root.iter(f"{SVG}text"):
        found.append("".join(e.itertext()))
        if e.text and e.text.strip() != found[-1]:
            found.append(e.text.strip())
    return found


# The chart ------------------------------------------------------------------------------
def test_svg_is_a_standalone_document_with_every_step_and_worker() -> None:
    result = sample()
    svg = result.to_svg()
    assert svg == render_svg(result)
    root = svg_tree(svg)  # well-formed XML, despite the hostile names
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    words = texts(root)
    labels = " ".join(words)
    for sid in ("fetch", "parse<b>", "score", "publish", "notify", "side", "thumbs"):
        assert sid in words or any(w.startswith(sid) for w in words), sid
    assert "worker host-a:101" in labels and "worker host-b:202" in labels
    assert "not started" in labels  # the skipped and upstream_failed steps
    assert "upstream_failed" in words and "skipped" in words
    # The legend names every kind of bar.
    for key in ("attempt succeeded", "attempt failed", "cancelled", "queue wait", "retry wait"):
        assert key in words
    assert "critical path" in words


def test_retries_are_separate_bars_on_the_worker_each_ran_on() -> None:
    tl = build_timeline(sample())
    groups = {g.name: g for g in tl.groups}
    a_rows = [r for r in groups["host-a:101"].rows if r.step_id == "fetch"]
    b_rows = [r for r in groups["host-b:202"].rows if r.step_id == "fetch"]
    [first] = [b for r in a_rows for b in r.bars if b.kind == "attempt"]
    [second] = [b for r in b_rows for b in r.bars if b.kind == "attempt"]
    assert first.status == "failed" and first.text.startswith("✕ #1")
    assert second.status == "succeeded" and second.text.startswith("#2")
    # The wait between the two attempts, and the queue wait before the first.
    [retry] = [b for r in b_rows for b in r.bars if b.kind == "retry"]
    assert (retry.start, retry.end) == pytest.approx((0.2, 0.45))
    [wait] = [b for r in a_rows for b in r.bars if b.kind == "wait"]
    assert (wait.start, wait.end) == pytest.approx((0.0, 0.02))
    assert "ConnectionError" in first.title and "host-a:101:Thread-1" in first.title
    # Critical path: both attempts of fetch, and score.
    assert first.critical and second.critical
    score = next(r for r in groups["host-b:202"].rows if r.step_id == "score")
    assert score.critical and score.bars[-1].status == "failed"


def test_statuses_look_different() -> None:
    svg = render_svg(sample())
    for status in ("succeeded", "failed", "upstream_failed", "skipped"):
        assert COLORS[status][0] in svg, status
    assert 'fill="url(#dr-hatch)"' in svg  # the cancelled attempt
    assert f'stroke="{CRITICAL}" stroke-width="2.5"' in svg  # critical path outline
    assert 'class="dr-cp"' in svg  # and the link between its steps
    assert 'class="dr-retry"' in svg and 'class="dr-wait"' in svg


def test_many_map_items_are_packed_into_a_few_rows() -> None:
    tl = build_timeline(sample())
    rows = [r for g in tl.groups for r in g.rows if r.step_id == "thumbs"]
    assert rows[0].label == "thumbs" and rows[0].bars[-1].kind == "span"
    lanes = rows[1:]
    assert 1 < len(lanes) < 25  # 25 items, 5 at a time
    drawn = sorted(b.text for r in lanes for b in r.bars if b.kind == "attempt")
    assert drawn == sorted(f"[{i}]" for i in range(25))
    for lane in lanes:
        spans = sorted((b.start, b.end) for b in lane.bars)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_few_map_items_get_a_row_each() -> None:
    result = sample()
    thumbs = result.steps["thumbs"]
    assert thumbs.items is not None
    thumbs.items = thumbs.items[:3]
    rows = [r for g in build_timeline(result).groups for r in g.rows if r.step_id == "thumbs"]
    assert [r.label for r in rows] == ["thumbs", "[0]", "[1]", "[2]"]


def test_a_running_run_is_drawn_up_to_now() -> None:
    result = sample()
    result.status = "running"
    result.finished_at = result.wall_time = None
    score = result.steps["score"]
    score.status = "running"
    score.attempts[0].finished_at = score.attempts[0].duration = None
    score.attempts[0].error = None
    score.finished_at = score.error = None
    now = t(2.0)
    tl = build_timeline(result, now)
    assert tl.running and tl.span == pytest.approx(2.0)
    bar = next(
        b for g in tl.groups for r in g.rows if r.step_id == "score" for b in r.bars
        if b.kind == "attempt"
    )  # fmt: skip
    assert bar.status == "running" and bar.end == pytest.approx(2.0)
    svg = render_svg(result, now)
    assert ">now</text>" in svg
    assert "still going" in render_html(result, now)


def test_an_empty_or_pending_result_still_renders() -> None:
    empty = ExecutionResult(run_id="r0", flow_name="nothing", flow_version="1", status="pending")
    svg_tree(empty.to_svg())
    assert "nothing" in empty.to_html()
    queued = sample()
    for rec in queued.steps.values():
        rec.attempts, rec.items, rec.started_at = [], None, None
    svg_tree(render_svg(queued))


# The page -------------------------------------------------------------------------------
def test_the_page_escapes_every_text_from_the_run() -> None:
    page = sample().to_html()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "parse&lt;b&gt;" in page and "parse<b>" not in page
    # Control characters never reach the SVG (they are not XML).
    result = sample()
    result.steps["score"].error = StepError(type="E", message="bell\x07 nul\x00 esc\x1b")
    result.steps["score"].attempts[0].error = result.steps["score"].error
    svg_tree(result.to_svg())
    assert "\x07" not in result.to_html() and "\x00" not in result.to_html()


def test_the_page_is_self_contained() -> None:
    page = sample().to_html()
    assert page.startswith("<!doctype html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    lowered = page.lower()
    for fetching in ("<script", "<link", "<img", "<iframe", "@import", "src=", "href="):
        assert fetching not in lowered, fetching
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched


def test_the_page_has_the_numbers_the_path_and_the_errors() -> None:
    page = sample().to_html()
    for text in ("wall time", "1.32 s", "step time", "4.79 s", "critical path", "1.23 s",
                 "parallelism", "3.63×", "93% of wall time", "sample-1"):  # fmt: skip
        assert text in page, text
    # The critical path, step by step; the advice on a failed run names the step that
    # failed first (not the path's longest step), and how to run it again.
    assert re.search(r'class="step">fetch</span> 880 ms → <span class="step">score', page)
    hint = page[page.index('<p class="hint">') :]
    hint = hint[: hint.index("</p>")]
    assert "step <b>score</b> (tool model_score) failed first" in hint
    assert "ValueError" in hint and "dagrelay retry sample-1" in hint and "optimise" not in hint
    # A run that succeeded: the step to optimise.
    done = sample().model_copy(update={"status": "succeeded", "error": None}).to_html()
    assert "<b>fetch</b>" in done and "optimise" in done
    # Errors: the step's failure with its traceback, and the attempt a retry recovered.
    errors = page[page.index("<h2>Errors</h2>") :]
    assert errors.index("score") < errors.index("fetch")
    assert "tool model_score · attempt 1 · worker host-b:202:Thread-3" in errors
    assert '<span class="type">ValueError</span>: score out of range' in errors
    assert "<details><summary>Traceback from the worker</summary><pre>Traceback" in errors
    assert "attempt failed, retried" in errors and "attempt 1 of 2" in errors


def test_a_real_run_renders(tmp_path: Path) -> None:
    with FlowExecutor(registry=load_tools("examples.tools")) as ex:
        result = ex.run(load_flow(ROOT / "examples/report.yaml"), {"user_ids": [1, 2]})
    assert result.succeeded
    words = texts(svg_tree(result.to_svg()))
    for sid in result.steps:
        assert sid in words
    assert "[1]" in words  # map items get their own rows
    page = result.to_html()
    assert " → ".join(result.critical_path) in re.sub(r"<[^>]+>|\s\d+ ms", "", page)


# In a browser ----------------------------------------------------------------------------
def chromium() -> str:
    """Debian's chromium; a clear error when missing (`make test` installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed: run `make test` (it installs Debian's chromium "
            "when it can) or `apt-get install chromium`"
        )
    return path


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        page.as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.timeout(120)
def test_the_page_renders_in_chromium(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    page = tmp_path / "run.html"
    page.write_text(sample().to_html(), encoding="utf-8")
    shot = tmp_path / "run.png"
    proc = browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1100")
    assert shot.exists(), proc.stderr[-2000:]
    image = pil.open(shot).convert("RGB")
    assert image.size == (1400, 1100)
    counts = {rgb: n for n, rgb in image.getcolors(maxcolors=1 << 24) or []}
    total = image.size[0] * image.size[1]
    blank = counts.get((255, 255, 255), 0) + counts.get((248, 250, 252), 0)  # page, body
    assert blank < 0.9 * total, "the screenshot is (nearly) blank"
    assert len(counts) > 50
    # The chart itself was drawn: the attempt fills and the critical path's outline.
    for hex_colour in (COLORS["succeeded"][0], COLORS["failed"][0], CRITICAL):
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 100, hex_colour
    # What the browser shows holds the step names (its DOM after rendering).
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert "<svg" in dom
    for name in ("fetch", "parse&lt;b&gt;", "score", "publish", "thumbs", "host-a:101"):
        assert name in dom, name
    assert "<script" not in dom


def test_the_header_duration_is_the_axis_the_bars_are_on() -> None:
    """The header says how long the axis runs (submit to finish): the last bar ends
    there, and the run's wall time (start to finish) is never shown as that span."""
    from executor.views.format import format_seconds

    result = sample()
    tl = build_timeline(result)
    assert tl.finished is not None
    svg = render_svg(result)
    header = svg[svg.index('class="dr-h"') : svg.index("</text>", svg.index('class="dr-h"'))]
    assert f"{result.status} in {format_seconds(tl.finished)} from submit to finish" in header
    ends = [b.end for g in tl.groups for r in g.rows for b in r.bars]
    assert ends and max(ends) <= tl.finished + 1e-6
    # A run submitted a while before it started: the bars start later, the header says so.
    late = result.model_copy(update={"submitted_at": result.submitted_at - timedelta(seconds=2)})
    late_tl = build_timeline(late)
    assert late_tl.finished is not None and late_tl.finished > tl.finished + 1.9
    assert f"in {format_seconds(late_tl.finished)} from submit" in render_svg(late)
