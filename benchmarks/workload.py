"""The benchmark's data: deterministic tokens, the table, its preload, the delete pool."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from sessionstore.crypto import Keyring

TOKEN_PREFIX = "sessionstore-bench:"

#: The expiry of delete-pool rows: far enough to tell them from the live sessions.
POOL_EXPIRY = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

#: How long a committed session lives (the expiry written is now + this).
LIFETIME = dt.timedelta(days=1)

#: Rows per chunk written to COPY.
_COPY_CHUNK = 5000


def token(i: int) -> str:
    """Return the token of row number `i` (43 url-safe base64 characters)."""
    digest = hashlib.sha256(f"{TOKEN_PREFIX}{i}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_sql(expr: str) -> str:
    """Return SQL computing ``token(<expr>)`` on the server, for an integer expression."""
    return (
        f"translate(rtrim(encode(sha256(convert_to('{TOKEN_PREFIX}' || {expr}, 'UTF8')),"
        " 'base64'), '='), '+/', '-_')"
    )


def sample_ids(rows: int, limit: int, rng: random.Random) -> list[int]:
    """Return every row number below `rows`, or `limit` of them at random if there are more."""
    return list(range(rows)) if rows <= limit else rng.sample(range(rows), limit)


class Table:
    """The benchmark's sessions table: its name and the SQL every contender runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ident = sql.Identifier(name)
        #: The quoted name, as it appears in SQL text.
        self.quoted = self.ident.as_string(None)
        q = self.quoted
        # Plain str, as most code passes it; the table name is a quoted identifier.
        self.find_sql: str = f"SELECT data FROM {q} WHERE token = %s AND current_timestamp < expiry"
        self.commit_sql: str = (
            f"INSERT INTO {q} (token, data, expiry) VALUES (%s, %s, %s) "
            "ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry"
        )
        self.delete_sql: str = f"DELETE FROM {q} WHERE token = %s"

    def drop(self, conn: psycopg.Connection[Any]) -> None:
        """Drop the table if it exists."""
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))

    def preload(
        self,
        conn: psycopg.Connection[Any],
        start: int,
        stop: int,
        payload_size: int,
        expiry: dt.datetime,
        rng: random.Random,
        keyring: Keyring | None = None,
    ) -> None:
        """Bulk-load rows `start` .. `stop`-1 with COPY: random payloads (encrypted with
        `keyring` for its token, as an encrypting store writes it), the given expiry."""

        def data(t: str) -> bytes:
            payload = rng.randbytes(payload_size)
            return payload if keyring is None else keyring.encrypt(payload, t.encode())

        expiry_text = expiry.isoformat()
        query = sql.SQL("COPY {} (token, data, expiry) FROM STDIN").format(self.ident)
        with conn.cursor() as cur, cur.copy(query) as copy:
            for first in range(start, stop, _COPY_CHUNK):
                last = min(stop, first + _COPY_CHUNK)
                copy.write(
                    "".join(
                        # COPY's text format: bytea as \x<hex>, its backslash escaped.
                        f"{t}\t\\\\x{data(t).hex()}\t{expiry_text}\n"
                        for t in map(token, range(first, last))
                    )
                )

    def vacuum(self, conn: psycopg.Connection[Any], analyze: bool = False) -> None:
        """VACUUM the table (needs an autocommit connection)."""
        verb = "VACUUM (ANALYZE)" if analyze else "VACUUM"
        conn.execute(sql.SQL(verb + " {}").format(self.ident))

    def check_tokens(self, conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
        """Check that the server computes the same tokens as `token` (pgbench relies on it)."""
        for i in ids:
            row = conn.execute(f"SELECT {token_sql('%s::int')}".encode(), (i,)).fetchone()
            if row is None or row[0] != token(i):
                raise RuntimeError(f"server-side token({i}) differs from the Python one")


class DeletePool:
    """Rows for the delete workload, taken in order and never reused."""

    def __init__(self, table: Table, first_id: int, payload: bytes) -> None:
        self.table = table
        self.payload = payload
        self.next_id = first_id
        self._filled_to = first_id
        self._token_base = first_id
        self._tokens: list[str] = []

    def prepare(self, conn: psycopg.Connection[Any], size: int) -> tuple[int, list[str]]:
        """Make rows ``next_id .. next_id+size-1`` exist (computed server side)."""
        base = self.next_id
        stop = base + size
        if stop > (start := max(self._filled_to, base)):
            query = (
                f"INSERT INTO {self.table.quoted} (token, data, expiry) "
                f"SELECT {token_sql('g')}, %s, %s FROM generate_series(%s::int, %s::int) AS g "
                "ON CONFLICT (token) DO NOTHING"
            )
            conn.execute(query.encode(), (self.payload, POOL_EXPIRY, start, stop - 1))
        self._filled_to = max(self._filled_to, stop)
        # Keep the tokens of rows not yet consumed; compute only the new ones.
        del self._tokens[: max(0, base - self._token_base)]
        self._token_base = base
        have = self._token_base + len(self._tokens)
        self._tokens.extend(token(i) for i in range(have, stop))
        return base, self._tokens[:size]

    def consume(self, count: int) -> None:
        """Move past `count` rows handed out by the last `prepare`."""
        self.next_id += count

    def clear(self, conn: psycopg.Connection[Any]) -> None:
        """Delete every leftover pool row, and VACUUM what the deletes left behind."""
        query = sql.SQL("DELETE FROM {} WHERE expiry >= %s").format(self.table.ident)
        conn.execute(query, (POOL_EXPIRY,))
        self.table.vacuum(conn)
        self._filled_to = self.next_id
