"""Airflow's trigger rules: the set DESIGN.md promises, written down once for the tests
(`test_scheduling` checks `Step.trigger` accepts exactly these)."""

AIRFLOW_RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
)
