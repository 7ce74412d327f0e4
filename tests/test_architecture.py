"""The layout holds what docs/architecture.md says: imports go one way, never in a circle,
and the page lists exactly the modules in the tree, each opening with one line.

Every import statement counts, wherever it stands: at the top, inside a function, or
under `TYPE_CHECKING` (a lazy import that dodges a circle is still a circle).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGES = ("executor", "workers")


@dataclass(frozen=True)
class Row:
    """One row of the page's layer table."""

    index: int
    layer: int
    names: tuple[str, ...]
    may_import: frozenset[int]  # layers below this row it may import


def layer_rows(page: str) -> list[Row]:
    """The rows of the table under '## Layers'."""
    section = page.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].isdigit():
            continue
        names = tuple(re.findall(r"`([\w.]+)`", cells[1]))
        span = re.match(r"layers? (\d+)(?:-(\d+))?", cells[2])
        allowed = (
            frozenset(range(int(span.group(1)), int(span.group(2) or span.group(1)) + 1))
            if span
            else frozenset()
        )
        rows.append(Row(len(rows), int(cells[0]), names, allowed))
    return rows


def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports, by any import statement in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def row_of(module: str, rows: list[Row]) -> Row:
    best: tuple[int, Row] | None = None
    for row in rows:
        for n in row.names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[0]):
                best = (len(n), row)
    assert best is not None, f"{module} is in no row of the layer table in {PAGE.name}"
    return best[1]


PAGE_TEXT = PAGE.read_text()
ROWS = layer_rows(PAGE_TEXT)
MODULES = modules()
GRAPH = {name: imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def test_the_layer_table_is_read() -> None:
    # The test is only as good as its reading of the page: a broken table must not pass.
    assert len(ROWS) >= 10
    assert [r.layer for r in ROWS] == sorted(r.layer for r in ROWS)
    assert ROWS[0].may_import == frozenset()
    assert all(r.may_import and max(r.may_import) < r.layer for r in ROWS[1:])
    assert GRAPH["executor.client"], "imports were not found"


def test_every_import_goes_down_the_layers() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        own = row_of(module, ROWS)
        for target in sorted(targets):
            to = row_of(target, ROWS)
            if to.index != own.index and to.layer not in own.may_import:
                wrong.append(f"{module} (layer {own.layer}) imports {target} (layer {to.layer})")
    assert wrong == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    # Without this, a finder that never reports anything would pass the test above.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def page_modules(page: str) -> set[str]:
    """Paths of the modules the page lists under '## Modules'."""
    section = page.split("## Modules", 1)[1]
    listed: set[str] = set()
    folder = ""
    for line in section.splitlines():
        if heading := re.match(r"### (\S+/)", line):
            folder = heading.group(1)
        elif item := re.match(r"- `([\w/]+\.py)`", line):
            listed.add(folder + item.group(1))
    return listed


def test_the_page_lists_exactly_the_modules_in_the_tree() -> None:
    tree = {
        str(p.relative_to(ROOT))
        for p in MODULES.values()
        if p.name != "__init__.py" or p.parent == ROOT / "executor"
    }
    listed = page_modules(PAGE_TEXT)
    assert sorted(tree - listed) == [], "modules missing from docs/architecture.md"
    assert sorted(listed - tree) == [], "docs/architecture.md names modules that are gone"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_opens_with_one_line_saying_what_it_holds(name: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text()))
    assert doc, f"{name} has no docstring"
    first, _, rest = doc.partition("\n")
    assert 10 < len(first) <= 100
    assert not rest or rest.startswith("\n"), f"{name}: the first line runs on"


def test_the_public_api_stays_importable_from_the_top() -> None:
    import executor

    missing = [n for n in executor.__all__ if not hasattr(executor, n)]
    assert missing == []
