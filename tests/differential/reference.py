"""A reference interpreter of dagrelay flows, written from the documented semantics.

Sources: `DESIGN.md` §1 (the public contract) and the README's "Flows" and "Running"
sections, nothing from `executor/`'s scheduling code. Where the documents are silent the
interpreter allows every reasonable reading and says so (`AMBIGUOUS` below).

`expect(flow, inputs, cancel_after)` computes, for the run and for each step, the SET of
allowed outcomes. One run of the flow without any stop is deterministic (the tools'
behaviour is a pure function of their inputs, `tools.plan`). What a machine's timing
decides is turned into sets with time intervals:

* every event of the unstopped run gets an interval `[lo, hi]` of seconds after submit:
  `lo` is the ideal time (zero overhead, unlimited workers), `hi` adds a slack per hop
  (`Timing`), so a real event happens inside it on a machine that is not hopelessly
  overloaded;
* a stop (the first failure under `fail_fast`, `cancel()`, the flow's `timeout`) comes at
  an interval too; what happened before it is the unstopped run's (causality), what
  comes after it is cancelled, and for everything whose interval overlaps the stop's
  every outcome a race could give is allowed: done normally, cancelled before it
  started, cancelled while attempt k ran, cancelled between attempts k and k+1.

Semantics used (quotes from DESIGN.md unless said otherwise):
* dependencies: steps referenced in inputs, `when` and `map`, plus `depends_on`;
* trigger rules "Airflow's set with Airflow's meaning", evaluated when the dependencies
  are all done (README), with Airflow's own tables (`airflow/ti_deps/deps/trigger_rule_dep.py`):
  all_success: a failed/upstream_failed dependency -> upstream_failed, else a skipped
  one -> skipped; all_failed: any success or skip -> skipped; all_done: runs;
  all_skipped: any success, failure or upstream_failed -> skipped; one_success: runs on
  a success, else skipped if all skipped, else upstream_failed; one_failed: runs on a
  failure or upstream_failed, else skipped; one_done: runs on a success or failure, else
  skipped; none_failed: a failure or upstream_failed -> upstream_failed;
  none_failed_min_one_success: the same, then all skipped -> skipped; none_skipped: a
  skip -> skipped; always: runs;
* the trigger rule first, then `when` (false -> skipped); "a reference to a step that
  did not succeed resolves to None";
* retries: `RetryPolicy` (max_attempts, backoff * multiplier^(n-1) capped at
  max_backoff, `retry_on` names classes in the error's MRO, empty = any), the step's
  policy or else the tool's; `timeout` per attempt (a `TimeoutError`);
* map: one call per item with `$item`/`$index`, the output the list of item outputs in
  item order, a child record per item; a failing item fails the step; a source that is
  not a list fails it;
* `fail_fast`: "after the first step failure (retries exhausted) nothing new starts,
  running steps are cancelled, the rest are cancelled", except that "a step whose rule
  can fire on failures (all_done, one_failed, always, ...) is not cancelled" (it runs
  once its dependencies are terminal: issue 15's wording); `cancel()` and the flow's
  `timeout` stop the run "the same way" (`cancelled` / `timed_out`);
* issue 14's contracts: a stopped step with retries left is `cancelled`; a cancelled
  running attempt's record says so; `StepRecord.error` is the final attempt's error
  (None when it succeeded);
* run status: `failed` when a step failed, else `succeeded`; the run's output is `None`
  when it failed (conformance suite), else the flow's `output` resolved.

* what the README says of trigger rules: rules are decided once every dependency is
  terminal; under fail_fast the rules that can fire when a dependency failed and none
  succeeded (all_failed, all_done, one_failed, one_done, none_skipped, always) are
  spared by the stop, a cancel() or timeout spares nothing; a dependency the stop
  cancelled counts as upstream_failed for a spared step; a map whose rule fires while
  the step its list comes from did not succeed is skipped.

AMBIGUOUS (every reading allowed; see the report):
* whether the other items of a map keep running once one item has failed.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from executor import Flow, RetryPolicy, Step

from . import tools

#: Rules that can fire when a dependency failed and none succeeded: spared by a
#: fail_fast stop (README).
CLEANUP_RULES = frozenset(
    {"all_done", "all_failed", "one_failed", "one_done", "none_skipped", "always"}
)
#: Rules that may fire before every dependency is done: none (README: a rule is judged
#: once every dependency is terminal; Airflow fires the `one_*` rules early).
EARLY_RULES: frozenset[str] = frozenset()

#: Error markers in outcomes, besides exception class names.
CANCEL = "<cancelled>"  # an attempt the stop cancelled
ANY = "<any error>"  # some error, type not documented (StepInputError, PredicateError...)
WILD = "<anything>"  # not decided by the documents: the check skips it


@dataclass(frozen=True)
class Timing:
    """Slack of the interval model (seconds). `hi` bounds assume a machine that is busy
    but not stalled; the soak can widen them with `scale`."""

    base: float = 0.3  # submit -> a root step starts
    hop: float = 0.05  # a dependency done -> the dependent starts; an attempt -> the next
    sleep_early: float = 0.01  # a sleep may end this much early (clock granularity)
    client: float = 0.1  # cancel() / the timeout's own lateness
    start_latency: float = 0.25  # the stop -> no new step or attempt starts
    cancel_latency: float = 0.4  # the stop -> running attempts are cancelled (workers poll 0.25 s)
    scale: float = 1.0

    def s(self, value: float) -> float:
        return value * self.scale


@dataclass(frozen=True)
class Iv:
    """A time interval in seconds after submit."""

    lo: float
    hi: float

    def shift(self, lo: float, hi: float | None = None) -> Iv:
        return Iv(self.lo + lo, self.hi + (lo if hi is None else hi))


@dataclass(frozen=True)
class Outcome:
    """One allowed end state of a step (or of a map item).

    `attempts` None: not checked (a map step's own attempt records are compared between
    backends only). `error`: an exception class name, CANCEL, ANY, WILD or None.
    `output`: canonical JSON of the output when succeeded, else None."""

    status: str
    attempts: int | None
    error: str | None
    output: str | None = None


@dataclass
class StepExpect:
    step_id: str
    is_map: bool
    outcomes: set[Outcome]
    #: per map item, the allowed outcomes; None when the items are not known
    items: list[set[Outcome]] | None = None
    #: the outcomes are those of the cleanup-after-stop contract (its own check)
    cleanup: bool = False
    #: the step's outcome could not be enumerated (too many combinations): not checked
    unknown: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    normal: Outcome | None = None
    #: the step's dependencies
    deps: list[str] = field(default_factory=list)
    #: whether the unstopped run calls its tool (the trigger rule and condition let it)
    runs: bool = False

    def statuses(self) -> set[str]:
        return {o.status for o in self.outcomes}

    def normal_status(self) -> str | None:
        """The status in the unstopped run."""
        return self.normal.status if self.normal else None


@dataclass
class Expectation:
    run_status: set[str]
    #: allowed canonical outputs of a succeeded run
    output: set[str]
    steps: dict[str, StepExpect]
    stop_kinds: set[str]  # subset of {"none", "fail_fast", "cancel", "timeout"}
    #: steps that may record `failed`
    may_fail: set[str]
    normal_status: str = "succeeded"


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# References and predicates, from the documented language ------------------------------
class ResolveError(Exception):
    pass


class PredicateError(Exception):
    pass


def _walk(value: Any, path: list[str]) -> Any:
    for seg in path:
        if isinstance(value, list):
            try:
                value = value[int(seg)]
            except (ValueError, IndexError):
                raise ResolveError(seg) from None
        elif isinstance(value, dict):
            if seg not in value:
                raise ResolveError(seg)
            value = value[seg]
        else:
            raise ResolveError(seg)
    return value


def resolve(value: Any, data: dict[str, Any], outputs: dict[str, Any], item: Any = None) -> Any:
    """Resolve references in an input value. `outputs[x]` is None unless x succeeded;
    `item` is `(item, index)` inside a map."""
    if isinstance(value, str) and value.startswith("$"):
        if value.startswith("$$"):
            return value[1:]
        head, *path = value[1:].split(".")
        if head == "input":
            return _walk(data, path)
        if head == "steps":
            sid, *rest = path
            out = outputs.get(sid)
            if out is None:
                return None  # a step that did not succeed
            return _walk(out, rest)
        if head == "item" and item is not None:
            return _walk(item[0], path)
        if head == "index" and item is not None and not path:
            return item[1]
        raise ResolveError(value)
    if isinstance(value, list):
        return [resolve(v, data, outputs, item) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, data, outputs, item) for k, v in value.items()}
    return value


def references(value: Any) -> set[str]:
    """Step ids referenced by an input value."""
    if isinstance(value, str) and value.startswith("$steps."):
        return {value.split(".")[1]}
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return references(list(value.values()))
    return set()


def predicate_steps(text: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(text, mode="eval")):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "steps"
        ):
            found.add(node.attr)
    return found


def evaluate(text: str, data: Any, outputs: dict[str, Any]) -> bool:
    """The documented predicate language: attribute access is a key lookup;
    comparisons, and/or/not, in, literals, len(), arithmetic."""
    tree = ast.parse(text, mode="eval")
    env = {"input": data, "steps": outputs}

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.BoolOp):
            vals = n.values
            if isinstance(n.op, ast.And):
                v: Any = True
                for x in vals:
                    v = ev(x)
                    if not v:
                        return v
                return v
            v = False
            for x in vals:
                v = ev(x)
                if v:
                    return v
            return v
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
            return not ev(n.operand)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Compare):
            left = ev(n.left)
            for op, right_node in zip(n.ops, n.comparators, strict=True):
                right = ev(right_node)
                ok = _compare(op, left, right)
                if not ok:
                    return False
                left = right
            return True
        if isinstance(n, ast.Name):
            if n.id in env:
                return env[n.id]
            raise PredicateError(n.id)
        if isinstance(n, ast.Attribute):
            base = ev(n.value)
            if isinstance(base, dict) and n.attr in base:
                return base[n.attr]
            raise PredicateError(n.attr)
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.List | ast.Tuple):
            return [ev(e) for e in n.elts]
        if (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id == "len"
            and len(n.args) == 1
        ):
            try:
                return len(ev(n.args[0]))
            except TypeError:
                raise PredicateError("len") from None
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            try:
                if isinstance(n.op, ast.Add):
                    return a + b
                if isinstance(n.op, ast.Sub):
                    return a - b
                if isinstance(n.op, ast.Mult):
                    return a * b
                if isinstance(n.op, ast.Div):
                    return a / b
            except (TypeError, ZeroDivisionError):
                raise PredicateError("arithmetic") from None
        raise PredicateError(ast.dump(n))

    return bool(ev(tree))


def _compare(op: ast.cmpop, a: Any, b: Any) -> bool:
    try:
        if isinstance(op, ast.Eq):
            return bool(a == b)
        if isinstance(op, ast.NotEq):
            return bool(a != b)
        if isinstance(op, ast.Lt):
            return bool(a < b)
        if isinstance(op, ast.LtE):
            return bool(a <= b)
        if isinstance(op, ast.Gt):
            return bool(a > b)
        if isinstance(op, ast.GtE):
            return bool(a >= b)
        if isinstance(op, ast.In):
            return bool(a in b)
        if isinstance(op, ast.NotIn):
            return bool(a not in b)
    except TypeError:
        raise PredicateError("comparison") from None
    raise PredicateError(type(op).__name__)


# Trigger rules (Airflow's tables) -------------------------------------------------------
def trigger(rule: str, statuses: list[str]) -> str:
    """`run`, `skipped` or `upstream_failed` for a step whose dependencies ended so."""
    success = statuses.count("succeeded")
    failed = statuses.count("failed")
    upstream_failed = statuses.count("upstream_failed")
    skipped = statuses.count("skipped")
    n = len(statuses)
    if not statuses or rule == "always" or rule == "all_done":
        return "run"
    if rule == "all_success":
        if failed or upstream_failed:
            return "upstream_failed"
        return "skipped" if skipped else "run"
    if rule == "all_failed":
        return "skipped" if success or skipped else "run"
    if rule == "all_skipped":
        return "skipped" if success or failed or upstream_failed else "run"
    if rule == "one_success":
        if success:
            return "run"
        return "skipped" if skipped == n else "upstream_failed"
    if rule == "one_failed":
        return "run" if failed or upstream_failed else "skipped"
    if rule == "one_done":
        return "run" if success or failed else "skipped"
    if rule == "none_failed":
        return "upstream_failed" if failed or upstream_failed else "run"
    if rule == "none_failed_min_one_success":
        if failed or upstream_failed:
            return "upstream_failed"
        return "skipped" if skipped == n else "run"
    if rule == "none_skipped":
        return "skipped" if skipped else "run"
    raise ValueError(f"the reference does not know the trigger rule {rule!r}")


# One run without stops ----------------------------------------------------------------
@dataclass
class AttemptSim:
    start: Iv
    end: Iv
    error: str | None


@dataclass
class Run1:
    """A call (a step, or one map item) run to its end: its attempts and result."""

    attempts: list[AttemptSim]
    status: str  # succeeded | failed
    error: str | None
    output: Any


@dataclass
class Normal:
    """A step in the unstopped run."""

    status: str
    error: str | None
    output: Any
    ready: Iv  # when its trigger rule and condition were decided
    end: Iv
    call: Run1 | None = None  # a plain step that ran
    items: list[Run1] | None = None  # a map step that ran
    errors: frozenset[str] = frozenset()  # a failed map: its failing items' error types
    #: when it failed for good (a failed map: from its first failing item)
    failed_at: Iv | None = None

    def outcome(self, is_map: bool) -> set[Outcome]:
        out = canon(self.output) if self.status == "succeeded" else None
        n = None if is_map else (len(self.call.attempts) if self.call else 0)
        errs: Iterable[str | None] = self.errors or [self.error]
        return {Outcome(self.status, n, e, out) for e in errs}


class Reference:
    """Interprets one flow with one input."""

    def __init__(self, flow: Flow, inputs: dict[str, Any], timing: Timing | None = None) -> None:
        self.flow = flow
        self.data = inputs
        self.t = timing or Timing()
        self.steps = {s.id: s for s in flow.steps}
        self.deps = {s.id: self._deps(s) for s in flow.steps}
        self.order = self._topological()
        self.tools = tools.registry

    # Structure -----------------------------------------------------------------------
    def _deps(self, s: Step) -> list[str]:
        found = references(s.inputs) | set(s.depends_on)
        if s.when:
            found |= predicate_steps(s.when)
        if s.map:
            found |= references(s.map)
        return sorted(found)

    def _topological(self) -> list[str]:
        done: list[str] = []
        seen: set[str] = set()
        pending = [s.id for s in self.flow.steps]
        while pending:
            progress = False
            for sid in list(pending):
                if all(d in seen for d in self.deps[sid]):
                    done.append(sid)
                    seen.add(sid)
                    pending.remove(sid)
                    progress = True
            if not progress:
                raise ValueError(f"cycle among {pending}")
        return done

    def policy(self, s: Step) -> RetryPolicy:
        if s.retry is not None:
            return s.retry
        t = self.tools.get(s.tool)
        return t.retry if t.retry is not None else RetryPolicy()

    def step_timeout(self, s: Step) -> float | None:
        if s.timeout is not None:
            return s.timeout
        return self.tools.get(s.tool).timeout

    # Calls ---------------------------------------------------------------------------
    def call(self, s: Step, inputs: dict[str, Any], start: Iv) -> Run1:
        policy = self.policy(s)
        limit = self.step_timeout(s)
        attempts: list[AttemptSim] = []
        at = start
        n = 0
        while True:
            n += 1
            p = tools.plan(inputs, n)
            seconds, error = p.seconds, p.error
            if limit is not None and seconds > limit:
                seconds, error = limit, "TimeoutError"
            lo = max(0.0, seconds - self.t.sleep_early)
            end = at.shift(lo, seconds + self.t.s(self.t.hop))
            attempts.append(AttemptSim(at, end, error))
            if error is None:
                return Run1(attempts, "succeeded", None, p.output)
            if n < policy.max_attempts and _retryable(policy, error):
                delay = min(policy.backoff * policy.multiplier ** (n - 1), policy.max_backoff)
                at = end.shift(delay, delay + self.t.s(self.t.hop))
                continue
            return Run1(attempts, "failed", error, None)

    # The unstopped run ---------------------------------------------------------------
    def unstopped(self) -> dict[str, Normal]:
        res: dict[str, Normal] = {}
        for sid in self.order:
            res[sid] = self._normal(self.steps[sid], res)
        return res

    def _ready(self, s: Step, res: dict[str, Normal]) -> Iv:
        deps = [res[d] for d in self.deps[s.id]]
        hop = self.t.s(self.t.hop)
        if not deps:
            return Iv(0.0, self.t.s(self.t.base))
        hi = max(d.end.hi for d in deps) + hop
        if s.trigger in EARLY_RULES:
            return Iv(min(d.end.lo for d in deps), hi)
        return Iv(max(d.end.lo for d in deps), hi)

    def _normal(self, s: Step, res: dict[str, Normal]) -> Normal:
        ready = self._ready(s, res)
        statuses = [res[d].status for d in self.deps[s.id]]
        outputs = {k: (v.output if v.status == "succeeded" else None) for k, v in res.items()}
        return self.decide(s, ready, statuses, outputs)

    def decide(self, s: Step, ready: Iv, statuses: list[str], outputs: dict[str, Any]) -> Normal:
        """Trigger rule, condition, then the call(s), from `ready` on."""
        verdict = trigger(s.trigger, statuses)
        if verdict != "run":
            return Normal(verdict, None, None, ready, ready)
        if s.when:
            try:
                go = evaluate(s.when, self.data, outputs)
            except PredicateError:
                return Normal("failed", ANY, None, ready, ready, failed_at=ready)
            if not go:
                return Normal("skipped", None, None, ready, ready)
        start = ready.shift(0.0, self.t.s(self.t.hop))
        if s.map is None:
            try:
                inputs = resolve(s.inputs, self.data, outputs)
            except ResolveError:
                return Normal("failed", ANY, None, ready, ready, failed_at=ready)
            run = self.call(s, inputs, start)
            end = run.attempts[-1].end
            return Normal(
                run.status,
                run.error,
                run.output,
                ready,
                end,
                call=run,
                failed_at=end if run.status == "failed" else None,
            )
        source_step = s.map.split(".")[1] if s.map.startswith("$steps.") else None
        if source_step is not None:
            status = dict(zip(self.deps[s.id], statuses, strict=True))[source_step]
            if status != "succeeded":
                return Normal("skipped", None, None, ready, ready)  # no list to map over
        try:
            source = resolve(s.map, self.data, outputs)
        except ResolveError:
            return Normal("failed", ANY, None, ready, ready, failed_at=ready)
        if not isinstance(source, list):
            return Normal("failed", ANY, None, ready, ready, failed_at=ready)
        items: list[Run1] = []
        for index, item in enumerate(source):
            try:
                inputs = resolve(s.inputs, self.data, outputs, (item, index))
            except ResolveError:
                return Normal("failed", ANY, None, ready, ready, failed_at=ready)
            items.append(self.call(s, inputs, start))
        if not items:
            return Normal("succeeded", None, [], ready, ready, items=[])
        end = Iv(
            max(i.attempts[-1].end.lo for i in items), max(i.attempts[-1].end.hi for i in items)
        )
        failed = [i for i in items if i.status == "failed"]
        if failed:
            first = Iv(
                min(i.attempts[-1].end.lo for i in failed),
                min(i.attempts[-1].end.hi for i in failed),
            )
            return Normal(
                "failed",
                failed[0].error,
                None,
                ready,
                end,
                items=items,
                errors=frozenset(i.error for i in failed if i.error),
                failed_at=Iv(first.lo, end.hi),
            )
        return Normal("succeeded", None, [i.output for i in items], ready, end, items=items)

    # Expectations --------------------------------------------------------------------
    def expect(self, cancel_after: float | None = None) -> Expectation:
        t = self.t
        normal = self.unstopped()
        run_failed = any(n.status == "failed" for n in normal.values())
        end = Iv(
            max((n.end.lo for n in normal.values()), default=0.0),
            max((n.end.hi for n in normal.values()), default=0.0),
        )
        candidates: dict[str, Iv] = {}
        if self.flow.on_failure == "fail_fast" and run_failed:
            fails = [n.failed_at for n in normal.values() if n.failed_at is not None]
            candidates["fail_fast"] = Iv(min(f.lo for f in fails), min(f.hi for f in fails))
        if cancel_after is not None:
            candidates["cancel"] = Iv(cancel_after, cancel_after + t.s(t.client))
        if self.flow.timeout is not None:
            candidates["timeout"] = Iv(self.flow.timeout, self.flow.timeout + t.s(t.client))
        first_hi = min((c.hi for c in candidates.values()), default=float("inf"))
        kinds = {
            k
            for k, c in candidates.items()
            if c.lo <= first_hi and (k == "fail_fast" or c.lo < end.hi)
        }
        no_stop = not kinds or (
            "fail_fast" not in candidates and end.lo < min(candidates[k].hi for k in kinds)
        )
        stop = (
            Iv(min(candidates[k].lo for k in kinds), min(candidates[k].hi for k in kinds))
            if kinds
            else None
        )
        # The failure that stops a fail_fast run is recorded as it is: when only one
        # step can be the first to fail, it is that step's own normal outcome.
        firsts = [
            sid
            for sid, n in normal.items()
            if "fail_fast" in candidates
            and n.failed_at is not None
            and n.failed_at.lo <= candidates["fail_fast"].hi
        ]
        sole_first = firsts[0] if kinds == {"fail_fast"} and len(firsts) == 1 else None
        expects: dict[str, StepExpect] = {}
        for sid in self.order:
            s = self.steps[sid]
            n = normal[sid]
            is_map = s.map is not None
            base = n.outcome(is_map)
            exp = StepExpect(
                sid,
                is_map,
                set(base) if no_stop else set(),
                policy=self.policy(s),
                normal=next(iter(base)),
                deps=self.deps[sid],
                runs=n.call is not None or n.items is not None,
            )
            exp.items = self._normal_items(n) if no_stop else None
            if stop is not None:
                caught, items = self._caught(s, n, stop)
                if s.trigger in CLEANUP_RULES and "fail_fast" in kinds:
                    exp.cleanup = True
                    after = self._after_stop(s, n, stop, expects)
                    if after is None:
                        exp.unknown = True
                    else:
                        exp.outcomes |= after
                    # Only fail_fast spares it: a cancel or timeout first catches it.
                    if kinds != {"fail_fast"}:
                        exp.outcomes |= caught
                else:
                    exp.outcomes |= caught
                exp.items = _merge_items(exp.items, items)
            if sid == sole_first:
                exp.outcomes = set(base)
                exp.items = self._normal_items(n)
            expects[sid] = exp
        statuses: set[str] = set()
        if no_stop:
            statuses.add("failed" if run_failed else "succeeded")
        for k in kinds:
            statuses.add({"fail_fast": "failed", "cancel": "cancelled", "timeout": "timed_out"}[k])
        outputs: set[str] = set()
        if no_stop and not run_failed:
            outs = {k: (v.output if v.status == "succeeded" else None) for k, v in normal.items()}
            outputs.add(canon(resolve(self.flow.output, self.data, outs)))
        may_fail = {sid for sid, e in expects.items() if "failed" in e.statuses() or e.unknown}
        return Expectation(
            statuses,
            outputs,
            expects,
            kinds | ({"none"} if no_stop else set()),
            may_fail,
            normal_status="failed" if run_failed else "succeeded",
        )

    def _normal_items(self, n: Normal) -> list[set[Outcome]] | None:
        if n.items is None:
            return None
        sets = [_run_outcomes(i) for i in n.items]
        failed = [i for i in n.items if i.status == "failed"]
        if failed:
            # AMBIGUOUS: the other items may be cancelled once one has failed.
            first = min(i.attempts[-1].end.lo for i in failed)
            for run, allowed in zip(n.items, sets, strict=True):
                if run.status != "failed" and run.attempts[-1].end.hi > first:
                    allowed |= _stopped_call(run, Iv(first, float("inf")), self.t)
        return sets

    def _caught(
        self, s: Step, n: Normal, stop: Iv
    ) -> tuple[set[Outcome], list[set[Outcome]] | None]:
        """The outcomes of a step a stop may catch (not spared)."""
        t = self.t
        is_map = s.map is not None
        start_by = stop.hi + t.s(t.start_latency)
        cancel_by = stop.hi + t.s(t.cancel_latency)
        out: set[Outcome] = set()
        none_started = Outcome("cancelled", None if is_map else 0, None if not is_map else WILD)
        if n.call is None and n.items is None:
            # decided without a call: skipped, upstream_failed, failed before running
            if n.ready.hi < stop.lo:
                return n.outcome(is_map), None
            out.add(Outcome("cancelled", None if is_map else 0, None))
            if n.ready.lo < start_by:
                out |= n.outcome(is_map)
                if is_map and n.status == "failed":
                    # README: a map whose list cannot be read fails in its one attempt,
                    # which the stop may catch running.
                    out.add(Outcome("cancelled", None, CANCEL))
            return out, None
        if n.end.hi < stop.lo:
            return n.outcome(is_map), self._normal_items(n)
        first_start = n.ready.shift(0.0, t.s(t.hop))
        if first_start.hi > stop.lo:
            out.add(none_started)
        if n.call is not None:
            out |= _stopped_call(n.call, stop, t)
            return out, None
        assert n.items is not None
        # A map: the step cancelled (or done), each item in its own race.
        items = [_stopped_call(i, stop, t) | {Outcome("cancelled", 0, None)} for i in n.items]
        if n.ready.lo < start_by:
            out.add(Outcome("cancelled", None, WILD))
        if n.end.lo < cancel_by:
            out |= n.outcome(is_map)
        if n.status == "failed" and n.failed_at is not None and n.failed_at.lo < cancel_by:
            out |= n.outcome(is_map)
        normal_items = self._normal_items(n) or []
        merged = [a | b for a, b in zip(items, normal_items, strict=False)] or items
        return out, merged

    def _after_stop(
        self, s: Step, n: Normal, stop: Iv, expects: dict[str, StepExpect]
    ) -> set[Outcome] | None:
        """A cleanup-rule step spared by the stop: it runs once its dependencies are
        terminal, whatever they ended as (cancelled included). None: too many cases."""
        t = self.t
        out: set[Outcome] = set()
        if n.ready.lo < stop.hi + t.s(t.start_latency):
            out |= n.outcome(s.map is not None)  # decided (or running) before the stop
        choices: list[list[tuple[str, str, str | None]]] = []
        for d in self.deps[s.id]:
            opts: set[tuple[str, str, str | None]] = set()
            for o in expects[d].outcomes:
                if o.status == "cancelled":
                    opts.add((d, "upstream_failed", None))  # README: did not run: a failure
                else:
                    opts.add((d, o.status, o.output))
            if expects[d].unknown:
                return None
            choices.append(sorted(opts, key=repr))
        total = 1
        for c in choices:
            total *= len(c)
        if total > 256:
            return None
        for combo in itertools.product(*choices):
            statuses = [st for _, st, _ in combo]
            outputs = {
                d: (json.loads(o) if st == "succeeded" and o is not None else None)
                for d, st, o in combo
            }
            later = self.decide(s, Iv(stop.lo, float("inf")), statuses, outputs)
            out |= later.outcome(s.map is not None)
        return out


def _retryable(policy: RetryPolicy, error: str) -> bool:
    if not policy.retry_on:
        return True
    import builtins

    found = tools.ERRORS.get(error) or getattr(builtins, error, None)
    cls: type[BaseException] = found if isinstance(found, type) else Exception
    names = set()
    for c in cls.__mro__:
        names.add(c.__name__)
        names.add(f"{c.__module__}.{c.__qualname__}")
    return any(n in names for n in policy.retry_on)


def _run_outcomes(run: Run1) -> set[Outcome]:
    out = canon(run.output) if run.status == "succeeded" else None
    return {Outcome(run.status, len(run.attempts), run.error, out)}


def _stopped_call(run: Run1, stop: Iv, t: Timing) -> set[Outcome]:
    """Outcomes of a call whose attempts a stop may interrupt (not counting 'cancelled
    before it started')."""
    start_by = stop.hi + t.s(t.start_latency)
    cancel_by = stop.hi + t.s(t.cancel_latency)
    out: set[Outcome] = set()
    n = len(run.attempts)
    for k, a in enumerate(run.attempts, start=1):
        if a.start.lo >= start_by:
            break  # attempt k cannot have started
        if a.end.hi > stop.lo:
            out.add(Outcome("cancelled", k, CANCEL))  # running when the stop came
        if a.end.lo < cancel_by and k < n:
            # attempt k failed around the stop with retries left: no attempt k+1
            nxt = run.attempts[k]
            if nxt.start.hi > stop.lo:
                out.add(Outcome("cancelled", k, a.error))
        if k == n and a.error is not None and a.end.lo < cancel_by and a.end.hi > stop.lo:
            # the final attempt failed just as the stop came: failed or cancelled
            out.add(Outcome("cancelled", k, a.error))
    last = run.attempts[-1]
    if last.end.lo < cancel_by and last.start.lo < start_by:
        out |= _run_outcomes(run)
    return out


def _merge_items(
    a: list[set[Outcome]] | None, b: list[set[Outcome]] | None
) -> list[set[Outcome]] | None:
    if a is None:
        return b
    if b is None:
        return a
    return [x | y for x, y in zip(a, b, strict=False)]


def expect(
    flow: Flow,
    inputs: dict[str, Any],
    cancel_after: float | None = None,
    timing: Timing | None = None,
) -> Expectation:
    """What the documented semantics allow for this run (see the module doc)."""
    return Reference(flow, inputs, timing).expect(cancel_after)
