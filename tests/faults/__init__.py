"""Fault injection: real `redis-server`, real `dagrelay worker` processes, real damage.

Each test builds its own `FaultCluster` (a server on a free port and the workers it
needs, with short leases), breaks something (SIGKILL, SIGTERM, Redis stopped and started
again on the same port, client connections killed, a client process killed), and checks
that every run still ends as recorded: one final record per step, nothing lost, no hang.
Recovery times are measured and printed (`pytest -s tests/faults` shows them).
"""
