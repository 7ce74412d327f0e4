"""The embedded backend: runs in this process on asyncio, nothing to install or start."""
