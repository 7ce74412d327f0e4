"""Test helpers that start real things: a redis-server, dagrelay worker processes."""
