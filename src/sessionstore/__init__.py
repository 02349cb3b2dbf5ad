"""A PostgreSQL session store for Python, a port of Go's scs/pgxstore; see docs/index.md."""

from __future__ import annotations

from ._core import OwnedSession, Versioned
from ._validate import DEFAULT_MAX_DATA_SIZE, MAX_OWNER_LENGTH, MAX_TOKEN_LENGTH
from .errors import (
    ConcurrentUpdateError,
    DatabaseError,
    ForkedProcessError,
    OwnersNotEnabledError,
    SessionStoreError,
)
from .store import Store
from .store_async import AsyncStore

__all__ = [
    "DEFAULT_MAX_DATA_SIZE",
    "MAX_OWNER_LENGTH",
    "MAX_TOKEN_LENGTH",
    "AsyncStore",
    "ConcurrentUpdateError",
    "DatabaseError",
    "ForkedProcessError",
    "OwnedSession",
    "OwnersNotEnabledError",
    "SessionStoreError",
    "Store",
    "Versioned",
]

__version__ = "0.1.0"
