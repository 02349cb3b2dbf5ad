"""Running a store's statement on libpq directly, below psycopg's cursor.

The work a cursor does on every call is done once per query here, and a call is one
`send_query_prepared` and one read; psycopg's adapters, wait and exceptions stay, so a
failure reaches the facade as through a cursor. The generators are psycopg's `PQGen`s,
driven by both stores. See docs/performance.md#where-a-finds-cpu-goes.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import weakref
from typing import Any

import psycopg
from psycopg import errors as e
from psycopg import pq

# Names psycopg's cursors are built on but its docs do not list: a release that moves
# one must not break `import sessionstore`, so without them every statement takes
# psycopg's public path (the cursor, prepared), which the contract tests also run on.
try:
    from psycopg.abc import PQGen
    from psycopg.adapt import PyFormat, Transformer
    from psycopg.generators import execute
    from psycopg.pq.abc import PGconn, PGresult

    AVAILABLE = all(
        hasattr(owner, name)
        for owner, name in (
            (e, "error_from_result"),
            (Transformer, "dump_sequence"),
            (Transformer, "set_pgresult"),
            (Transformer, "load_rows"),
            (psycopg.Connection, "wait"),
            (psycopg.AsyncConnection, "wait"),
        )
    )
except ImportError:
    AVAILABLE = False

from ._core import Statement
from ._pool import Fetch

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
_PLACEHOLDER = re.compile(rb"%(.)", re.DOTALL)
_UNDEFINED_STATEMENT = b"26000"  # invalid_sql_statement_name: not prepared there


# What the store prepared on each connection, keyed by the connection object: a
# reconnected connection is a new object, so a new server session starts with nothing
# prepared. Weak, so a closed connection's entry goes with it; which is also why no
# value may refer to its connection (a `Transformer` does: it is made per call, which
# is cheap, rather than kept here, where it would keep every connection alive).
_prepared: weakref.WeakKeyDictionary[psycopg.BaseConnection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary()
)
_prepared_lock = threading.Lock()
_numbered: dict[bytes, bytes] = {}
_names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}


#: Whether the stores run statements here; ``SESSIONSTORE_WIRE=0`` sends them all
#: through psycopg's public prepared path instead (the comparison in the benchmark).
enabled = AVAILABLE and os.environ.get("SESSIONSTORE_WIRE", "1") != "0"


def direct(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether a statement on `conn` may run here, doing what the cursor path would."""
    # Outside autocommit, psycopg's implicit transaction is what the application asked
    # for; a custom or traced cursor factory (OpenTelemetry's instrumentation) is
    # honoured by taking the cursor path.
    factory = getattr(conn, "cursor_factory", None)  # on Connection and AsyncConnection
    return enabled and conn.autocommit and factory in (psycopg.Cursor, psycopg.AsyncCursor)


def run(conn: psycopg.BaseConnection[Any], statement: Statement, fetch: Fetch) -> PQGen[Any]:
    """Run `statement` on a held `conn`; return or raise what the cursor path's `fetch` would."""
    prepared = _prepared_on(conn)
    pgconn = conn.pgconn
    tx = Transformer(conn)
    params = tx.dump_sequence(statement.params, [PyFormat.AUTO] * len(statement.params))
    types, formats = tx.types or (), tx.formats
    query = _numbered_query(statement.query)
    if conn.prepare_threshold is None:  # PgBouncer before 1.21: unnamed, as psycopg does
        pgconn.send_query_params(
            query, params, param_types=types, param_formats=formats, result_format=pq.Format.BINARY
        )
        result = yield from _result(pgconn)
    else:
        name = _name(query, types)

        def prepared_run() -> PQGen[PGresult]:
            if name not in prepared:
                pgconn.send_prepare(name, query, param_types=types)
                _check(conn, (yield from _result(pgconn)))
                prepared.add(name)
            pgconn.send_query_prepared(
                name, params, param_formats=formats, result_format=pq.Format.BINARY
            )
            return (yield from _result(pgconn))

        result = yield from prepared_run()
        if result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_STATEMENT:
            # Deallocated behind the store's back (DISCARD ALL in a pool's reset
            # callback, say): nothing ran, so prepare it again and run it once more.
            prepared.clear()
            result = yield from prepared_run()
    _check(conn, result)
    if fetch == "count":
        return result.command_tuples if result.command_tuples is not None else -1
    if fetch == "none":
        return None
    tx.set_pgresult(result)
    if fetch == "one":
        return tx.load_row(0, tuple) if result.ntuples else None
    return tx.load_rows(0, result.ntuples, tuple)


def _result(pgconn: PGconn) -> PQGen[PGresult]:
    """Flush what was sent and read its result (one statement: one result)."""
    results: list[PGresult] = yield from execute(pgconn)
    return results[-1]


def _prepared_on(conn: psycopg.BaseConnection[Any]) -> set[bytes]:
    """The names of the statements prepared on `conn` (its holder may change it)."""
    prepared = _prepared.get(conn)
    if prepared is None:
        # Rare (once per connection); the lock keeps two threads' first uses of
        # different connections from racing inside the weak dictionary.
        with _prepared_lock:
            prepared = _prepared.setdefault(conn, set())
    return prepared


def _check(conn: psycopg.BaseConnection[Any], result: PGresult) -> None:
    """Raise psycopg's exception for a failed result, as a cursor would."""
    if result.status in _OK:
        return
    if result.status == pq.ExecStatus.FATAL_ERROR:
        raise e.error_from_result(result, encoding=conn.info.encoding)
    status = pq.ExecStatus(result.status).name
    raise e.InternalError(f"unexpected result status from PostgreSQL: {status}")


def _numbered_query(query: bytes) -> bytes:
    """The query with libpq's ``$1, $2...`` for psycopg's ``%s`` placeholders, kept per query."""
    # psycopg converts the query on every call, behind a cursor, and its converter
    # (`psycopg._queries`) is private.
    numbered = _numbered.get(query)
    if numbered is None:
        count = 0

        def replace(match: re.Match[bytes]) -> bytes:
            nonlocal count
            if match[1] == b"%":
                return b"%"
            if match[1] != b"s":
                raise ValueError(f"unsupported placeholder %{match[1].decode()} in {query!r}")
            count += 1
            return b"$%d" % count

        numbered = _numbered[query] = _PLACEHOLDER.sub(replace, query)
    return numbered


def _name(query: bytes, types: tuple[int, ...]) -> bytes:
    """The prepared statement's name for a numbered query with these parameter types."""
    # A hash, not a counter: the same name always means the same statement, in every
    # process, so a name met on a server connection shared through a pooler is never
    # another query. Other types (an all-NULL array of owners) make another statement.
    key = (query, types)
    name = _names.get(key)
    if name is None:
        digest = hashlib.blake2b(query + repr(types).encode(), digest_size=8).hexdigest()
        name = _names[key] = f"_sessionstore_{digest}".encode()
    return name
