"""The Redis backend: run state in Redis, Lua scripts, step messages, the coordinator."""
