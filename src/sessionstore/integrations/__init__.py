"""Session middleware for web frameworks, on the session manager (docs/sessions.md).

Nothing here imports a web framework: ``flask``, ``quart``, ``starlette`` (also for
FastAPI), ``litestar``, ``aiohttp`` and ``django`` are submodules, each with its own
extra (``pip install "sessionstore[flask]"``, ...).
"""

from __future__ import annotations

__all__: list[str] = []
