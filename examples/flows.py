"""The example flows written in Python: each is equal to its YAML file in `examples/`.

Run one by its module and name (its module imports the tools it calls)::

    dagrelay run examples.flows:user_report --input '{"user_ids": [1, 2, 3]}'

`tests/test_examples.py` checks each against `examples/<file>.yaml`, both ways.
"""

from __future__ import annotations

from examples.tools import (
    archive,
    auto_approve,
    decide,
    fetch_orders,
    fetch_user,
    load_prices,
    open_review,
    order_totals,
    render_report,
    score_text,
    split_words,
    word_info,
    word_stats,
)
from executor import flow, index, item


@flow(description="Per-user fetches in parallel, joined into one order report.")
def user_report(user_ids: list[int]):
    users = fetch_user.options(id="users").map(user_ids, user_id=item)
    orders = fetch_orders.options(id="orders").map(user_ids, user_id=item)
    prices = load_prices.options(id="prices")(currency="EUR")
    totals = order_totals.options(id="totals")(orders=orders, prices=prices)
    render = render_report.options(id="render")(
        title="Weekly order report", users=users, orders=orders, totals=totals, currency="EUR"
    )
    # Ordering only: runs after render, reads none of it.
    archive.options(depends_on=[render])(name="weekly-order-report")
    return render


@flow(description="Score a text, then approve it or open a review, then decide.")
def review_branch(text: str):
    score = score_text.options(id="score")(text=text)
    approve = auto_approve.options(id="approve", when="steps.score.value >= 0.5")(
        text=text, score=score.value
    )
    review = open_review.options(id="review", when="steps.score.value < 0.5")(
        text=text, negative=score.negative
    )
    # none_failed: the join runs whichever branch was skipped.
    return decide.options(trigger="none_failed")(approved=approve, review=review)


@flow(description="Split a text into words and look at each word in parallel.")
def word_map(text: str):
    words = split_words.options(id="split")(text=text)
    infos = word_info.options(id="words").map(words, word=item, position=index)
    return word_stats.options(id="stats")(infos=infos, label="word statistics")
