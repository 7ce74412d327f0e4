"""Flow-semantics conformance suite: every test runs against every backend.

See `conftest.py` for the `backend` fixture and `tools.py` for the tools.
"""
