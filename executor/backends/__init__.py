"""Transports that drive the scheduling core: in-process asyncio, and Redis."""
