"""The flows benchmarks run, built in Python (sizes beyond what flow files allow)."""

from __future__ import annotations

from executor import Flow, Step


def chain(n: int, tool: str = "noop") -> Flow:
    steps = [Step(id="s0", tool=tool)]
    steps += [Step(id=f"s{i}", tool=tool, inputs={"x": f"$steps.s{i - 1}"}) for i in range(1, n)]
    return Flow(name=f"chain{n}", steps=steps)


def fan_out(n: int, tool: str = "noop", join: bool = False) -> Flow:
    steps = [Step(id="root", tool=tool)]
    steps += [Step(id=f"leaf{i}", tool=tool, inputs={"x": "$steps.root"}) for i in range(n)]
    if join:
        steps.append(Step(id="join", tool=tool, depends_on=[f"leaf{i}" for i in range(n)]))
    return Flow(name=f"fanout{n}", steps=steps)


def uneven(tool: str = "sleep") -> Flow:
    """A→B 200 ms; A→C 10 ms→D 10 ms→E 200 ms. Critical path A,C,D,E = 220 ms."""

    def s(sid: str, secs: float, after: str | None) -> Step:
        inputs: dict[str, object] = {"seconds": secs}
        if after:
            inputs["after"] = f"$steps.{after}"
        return Step(id=sid, tool=tool, inputs=inputs)

    return Flow(
        name="uneven",
        steps=[
            s("A", 0.0, None),
            s("B", 0.2, "A"),
            s("C", 0.01, "A"),
            s("D", 0.01, "C"),
            s("E", 0.2, "D"),
        ],
    )


def lattice(n: int = 10, seconds: float = 0.01, tool: str = "sleep") -> Flow:
    """An n×n grid: each cell depends on its left and upper neighbours."""
    steps = []
    for r in range(n):
        for c in range(n):
            deps = [f"c{r - 1}_{c}"] * (r > 0) + [f"c{r}_{c - 1}"] * (c > 0)
            steps.append(
                Step(id=f"c{r}_{c}", tool=tool, inputs={"seconds": seconds}, depends_on=deps)
            )
    return Flow(name=f"lattice{n}", steps=steps)


def io_fan(n: int, seconds: float, tool: str = "sleep") -> Flow:
    steps = [Step(id="root", tool="noop")]
    steps += [
        Step(id=f"io{i}", tool=tool, inputs={"seconds": seconds, "after": "$steps.root"})
        for i in range(n)
    ]
    return Flow(name=f"io{n}", steps=steps)


def cpu_fan(leaves: int, turns: int) -> Flow:
    """One root, then `leaves` CPU-bound steps of `turns` loop turns each."""
    steps = [Step(id="root", tool="noop")]
    steps += [
        Step(id=f"cpu{i}", tool="burn", inputs={"n": turns, "after": "$steps.root"})
        for i in range(leaves)
    ]
    return Flow(name=f"cpu{leaves}", steps=steps)


def map_sleep(items: int, seconds: float) -> Flow:
    """A root that makes a list of `items`, then one map step: a sync sleep per item."""
    return Flow(
        name=f"map{items}",
        steps=[
            Step(id="root", tool="numbers", inputs={"n": items}),
            Step(
                id="each",
                tool="counted_sleep_sync",
                map="$steps.root",
                inputs={"seconds": seconds, "after": "$item"},
            ),
        ],
    )
