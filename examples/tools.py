"""Example tools for the flows in `examples/` (registered into the default registry).

Run them with the command line, e.g.::

    dagrelay run examples/report.yaml --tools examples.tools --input '{"user_ids": [1, 2, 3]}'
    dagrelay run examples/branch.yaml --tools examples.tools --input '{"text": "great fast tool"}'
    dagrelay run examples/map.yaml --tools examples.tools --input '{"text": "a map over words"}'

The tools mix sync functions (run in a thread) and `async def` coroutines, return plain
values and pydantic models, and sleep a little (0.05-0.2 s) so the timing columns and
the parallelism of a run are visible. Every result is deterministic, so tests can
compute the expected outputs by calling the functions directly.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from executor import RetryPolicy, tool

# --- report.yaml: fan-out over users, parallel branches, a join -------------------------

SKUS = ("apple", "bread", "cheese", "dates")
PRICES = {"apple": 0.5, "bread": 2.25, "cheese": 4.0, "dates": 3.1}
CURRENCY_RATES = {"EUR": 1.0, "USD": 1.1, "GBP": 0.85}
NAMES = ("Ada", "Brian", "Chen", "Dana", "Emil", "Fatima", "Grace", "Hiro")


class User(BaseModel):
    """A customer."""

    id: int
    name: str
    email: str


class Order(BaseModel):
    """One line of a customer's orders."""

    order_id: str
    sku: str
    quantity: int


class ReportLine(BaseModel):
    """A customer's total in the report."""

    user_id: int
    name: str
    orders: int
    total: float


class Report(BaseModel):
    """The rendered report: one line per customer and the grand total."""

    title: str
    currency: str
    lines: list[ReportLine]
    grand_total: float
    text: str


@tool(retry=RetryPolicy(max_attempts=2, backoff=0.01), max_concurrency=8)
async def fetch_user(user_id: int) -> User:
    """Look a user up (async; 0.1 s). Unknown (non-positive) ids raise `LookupError`."""
    await asyncio.sleep(0.1)
    if user_id <= 0:
        raise LookupError(f"no user with id {user_id}")
    name = NAMES[(user_id - 1) % len(NAMES)]
    return User(id=user_id, name=name, email=f"{name.lower()}{user_id}@example.com")


@tool
def fetch_orders(user_id: int) -> list[Order]:
    """A user's orders (sync, in a thread; 0.15 s): user n has n orders."""
    time.sleep(0.15)
    return [
        Order(order_id=f"{user_id}-{k}", sku=SKUS[(user_id + k) % len(SKUS)], quantity=k + 1)
        for k in range(max(user_id, 0))
    ]


@tool
def load_prices(currency: str = "EUR") -> dict[str, float]:
    """The price list in a currency (sync; 0.2 s)."""
    time.sleep(0.2)
    rate = CURRENCY_RATES[currency]
    return {sku: round(price * rate, 2) for sku, price in PRICES.items()}


@tool
async def order_totals(orders: list[list[Order]], prices: dict[str, float]) -> list[float]:
    """Each user's order total: the sum of quantity x price (async; 0.05 s)."""
    await asyncio.sleep(0.05)
    return [
        round(sum(o.quantity * prices[o.sku] for o in user_orders), 2) for user_orders in orders
    ]


@tool
def render_report(
    title: str,
    users: list[User],
    orders: list[list[Order]],
    totals: list[float],
    currency: str = "EUR",
) -> Report:
    """Join users, orders and totals into a `Report` (sync; 0.05 s)."""
    time.sleep(0.05)
    lines = [
        ReportLine(user_id=u.id, name=u.name, orders=len(os), total=t)
        for u, os, t in zip(users, orders, totals, strict=True)
    ]
    grand = round(sum(line.total for line in lines), 2)
    rows = [f"{ln.name:<8} {ln.orders:>3} orders {ln.total:>9.2f} {currency}" for ln in lines]
    text = "\n".join([title, *rows, f"{'total':<8} {grand:>20.2f} {currency}"])
    return Report(title=title, currency=currency, lines=lines, grand_total=grand, text=text)


@tool
async def archive(name: str) -> str:
    """Pretend to archive a finished report (async; 0.05 s); returns its location."""
    await asyncio.sleep(0.05)
    return f"archive://reports/{name}"


# --- branch.yaml: a condition on both sides and a none_failed join ----------------------

POSITIVE = frozenset({"good", "great", "fast", "love", "excellent", "nice", "happy", "clean"})
NEGATIVE = frozenset({"bad", "slow", "hate", "broken", "awful", "bug", "crash", "ugly"})


class Score(BaseModel):
    """A sentiment score in [0, 1] and the words that decided it."""

    value: float
    positive: list[str]
    negative: list[str]


class Decision(BaseModel):
    """What the branch flow decided, and which side of the branch ran."""

    action: str
    route: str
    note: str


@tool
async def score_text(text: str) -> Score:
    """Score text by counting positive and negative words (async; 0.05 s)."""
    await asyncio.sleep(0.05)
    words = [w.strip(".,!?;:").lower() for w in text.split()]
    pos = [w for w in words if w in POSITIVE]
    neg = [w for w in words if w in NEGATIVE]
    value = 0.5 if not (pos or neg) else len(pos) / (len(pos) + len(neg))
    return Score(value=round(value, 4), positive=pos, negative=neg)


@tool
def auto_approve(text: str, score: float) -> str:
    """The positive side of the branch (sync; 0.1 s)."""
    time.sleep(0.1)
    return f"approved automatically (score {score:.2f})"


@tool
async def open_review(text: str, negative: list[str]) -> str:
    """The negative side of the branch (async; 0.1 s)."""
    await asyncio.sleep(0.1)
    return f"review opened: {', '.join(negative) or 'no clear signal'}"


@tool
def decide(approved: str | None = None, review: str | None = None) -> Decision:
    """The join: whichever branch ran (the skipped one's output is None)."""
    if approved is not None:
        return Decision(action="publish", route="approve", note=approved)
    if review is not None:
        return Decision(action="hold", route="review", note=review)
    return Decision(action="none", route="none", note="neither branch ran")


# --- map.yaml: one call per item, with $item and $index ---------------------------------


class WordInfo(BaseModel):
    """One word of a text, where it was, and a few facts about it."""

    position: int
    word: str
    length: int
    vowels: int


@tool
def split_words(text: str) -> list[str]:
    """Split text into lowercase words without punctuation (sync)."""
    return [w for w in (part.strip(".,!?;:").lower() for part in text.split()) if w]


@tool(max_concurrency=4)
async def word_info(word: str, position: int) -> WordInfo:
    """Facts about one word (async; 0.05 s; at most 4 at once)."""
    await asyncio.sleep(0.05)
    return WordInfo(
        position=position, word=word, length=len(word), vowels=sum(c in "aeiou" for c in word)
    )


@tool
def word_stats(infos: list[WordInfo], label: str) -> dict[str, object]:
    """Aggregate the mapped word facts (sync)."""
    return {
        "label": label,
        "words": len(infos),
        "letters": sum(i.length for i in infos),
        "vowels": sum(i.vowels for i in infos),
        "longest": max(infos, key=lambda i: (i.length, -i.position)).word if infos else None,
        "order": [i.word for i in sorted(infos, key=lambda i: i.position)],
    }
