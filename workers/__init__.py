"""dagrelay workers: the Dramatiq side (added by the distributed issue)."""
