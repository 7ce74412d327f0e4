"""A run's rules and records: the scheduling core, attempts, progress and events."""
