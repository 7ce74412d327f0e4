"""Differential fuzz (issue 14): generated flows on the reference interpreter, the
embedded backend and the distributed backend, compared check by check.

`generator.py` makes the flows, `reference.py` says what the documents allow,
`runner.py` runs the backends, `checks.py` names each contract; `test_differential.py`
runs a fixed list in `make test`, `python -m tests.differential` is the soak.
"""
