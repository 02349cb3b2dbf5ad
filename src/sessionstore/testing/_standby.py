"""Streaming standbys of throw-away servers, and multi-host DSNs, for failover tests.

See docs/reliability.md#the-test-tools.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ._account import _give
from ._instance import (
    _HOST,
    _KILL_TIMEOUT,
    _POLL_INTERVAL,
    _SUPERUSER,
    _Instance,
    logger,
)
from ._server import PostgresServer, _server_of

__all__ = ["Standby", "multi_host_dsn", "streaming_standby"]

_REPLICATION_TIMEOUT = 30.0
# A name that needs no quoting in primary_conninfo, synchronous_standby_names and as a
# replication slot name (lower case: slot names allow nothing else).
_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Standby:
    """A running streaming standby of a server started by `ephemeral_postgres`.

    Attributes:
        server: Where to connect to the standby (read-only until `promote`); it can be
            crashed, restarted and stopped as the primary can.
        primary: The server it replicates.
        application_name: Its name in the primary's ``pg_stat_replication`` (and in
            ``synchronous_standby_names``, and of its replication slot).
        synchronous: Whether the primary waits for it on every commit.
    """

    server: PostgresServer
    primary: PostgresServer
    application_name: str
    synchronous: bool

    def in_recovery(self) -> bool:
        """Whether the server is still a standby (``pg_is_in_recovery()``): True until promoted."""
        with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5) as conn:
            return _fetch_bool(conn, "SELECT pg_is_in_recovery()", ())

    def wait_for_replay(self, timeout: float = _REPLICATION_TIMEOUT) -> None:
        """Wait up to `timeout` seconds until the standby replayed what the primary committed.

        Raises:
            TimeoutError: If the standby did not catch up in time.
        """
        with psycopg.connect(self.primary.dsn, autocommit=True, connect_timeout=5) as conn:
            # The insert position: with synchronous_commit=off the latest commits may
            # not be written yet (pg_current_wal_lsn), and are then missed.
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        query = "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn"
        with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5) as conn:
            _poll(
                lambda: _fetch_bool(conn, query, (target,)),
                timeout,
                f"the standby did not replay the primary's WAL up to {target}",
            )

    def promote(self, timeout: float = _REPLICATION_TIMEOUT) -> None:
        """Promote the standby (``pg_promote()``); wait up to `timeout` s until it takes writes.

        Raises:
            RuntimeError: If the promotion did not finish in time.
        """
        started = time.monotonic()
        with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=5) as conn:
            promoted = _fetch_bool(
                conn, "SELECT pg_promote(wait => true, wait_seconds => %s)", (max(1, int(timeout)),)
            )
        if not promoted:
            raise RuntimeError(
                f"the standby on port {self.server.port} was not promoted within {timeout} s"
            )
        logger.info(
            "Standby %r on %s:%d promoted in %.2f s",
            self.application_name,
            _HOST,
            self.server.port,
            time.monotonic() - started,
        )


def multi_host_dsn(
    servers: Sequence[PostgresServer], *, target_session_attrs: str = "read-write", **params: Any
) -> str:
    """One libpq DSN naming several servers, tried in order on every connect.

    With ``target_session_attrs=read-write`` libpq skips servers that are down or in
    recovery, so a pool on this DSN finds the new primary after a failover by itself.

    Args:
        servers: The servers, e.g. ``[primary, standby.server]``; user and database are
            taken from the first.
        target_session_attrs: libpq's setting of the same name.
        **params: Other connection parameters, e.g. ``connect_timeout=2``.

    Raises:
        ValueError: If ``servers`` is empty.
    """
    if not servers:
        raise ValueError("multi_host_dsn() needs at least one server")
    first = servers[0]
    conn_params: dict[str, Any] = {
        "host": ",".join(server.host for server in servers),
        "port": ",".join(str(server.port) for server in servers),
        "user": first.user,
        "dbname": first.dbname,
        "target_session_attrs": target_session_attrs,
        "password": first.password,  # left out if None
        **params,
    }
    return make_conninfo(**conn_params)


@contextlib.contextmanager
def streaming_standby(
    primary: PostgresServer,
    *,
    synchronous: bool = False,
    application_name: str = "standby1",
    settings: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[Standby]:
    """Start a hot standby streaming from ``primary``; stop and delete it on leaving the block.

    How it is made and undone: docs/reliability.md#the-test-tools.

    Args:
        primary: A running server started by `ephemeral_postgres`.
        synchronous: Make the primary wait for the standby on every commit
            (``synchronous_standby_names``); the primary must run with
            ``synchronous_commit=on`` (``durable=True``, or that setting).
        application_name: The standby's name (lower case letters, digits, ``_``).
        settings: Extra settings for the standby only.
        startup_timeout: Seconds to wait for the standby to accept connections, and
            for it to stream.

    Yields:
        The standby.

    Raises:
        RuntimeError: The primary was not started by `ephemeral_postgres`, is not
            running or cannot feed a standby, or the backup or the standby failed.
        ValueError: ``application_name`` is not a plain name or already taken on the
            primary, or ``synchronous`` is asked of a primary with ``synchronous_commit``
            off.
    """
    if _NAME_PATTERN.fullmatch(application_name) is None:
        raise ValueError(
            f"application_name {application_name!r} must be lower case letters, digits "
            "and underscores (it also names the replication slot)"
        )
    primary_instance = primary.instance
    if primary_instance is None or primary_instance.port is None:
        raise RuntimeError(
            f"cannot start a standby of the server from {primary.source}: only servers "
            "started by ephemeral_postgres() can have one"
        )
    with psycopg.connect(primary.dsn, autocommit=True, connect_timeout=5) as conn:
        _check_primary(conn, synchronous=synchronous)
        if _fetch_bool(
            conn,
            "SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = %s",
            (application_name,),
        ):
            raise ValueError(
                f"the primary already has a standby (replication slot) named "
                f"{application_name!r}; give this one another application_name"
            )
    instance = _StandbyInstance(
        primary=primary_instance,
        primary_port=primary.port,
        application_name=application_name,
        settings=settings,
        startup_timeout=startup_timeout,
    )
    try:
        standby = Standby(
            server=_server_of(instance, instance.start()),
            primary=primary,
            application_name=application_name,
            synchronous=synchronous,
        )
        with psycopg.connect(primary.dsn, autocommit=True, connect_timeout=5) as conn:
            if synchronous:
                # After the base backup: a copied postgresql.auto.conf would make the
                # promoted standby wait for itself.
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                        sql.Literal(application_name)
                    )
                )
                conn.execute("SELECT pg_reload_conf()")
            _wait_for_standby(conn, application_name, synchronous, startup_timeout)
        logger.info(
            "Standby %r of %s:%d ready on %s:%d (%s replication)",
            application_name,
            primary.host,
            primary.port,
            _HOST,
            standby.server.port,
            "synchronous" if synchronous else "asynchronous",
        )
        yield standby
    finally:
        # Synchronous commits on the primary must not wait for a stopped standby, and
        # its slot must not keep WAL forever: undo both if the primary still runs.
        if synchronous:
            _on_primary(primary, "reset synchronous_standby_names", _reset_synchronous)
        instance.stop()
        _on_primary(primary, "drop the slot", lambda conn: _drop_slot(conn, application_name))


# --------------------------------------------------------------------------- helpers


class _StandbyInstance(_Instance):
    """A throw-away server whose cluster is a base backup of a running primary."""

    def __init__(
        self,
        *,
        primary: _Instance,
        primary_port: int,
        application_name: str,
        settings: Mapping[str, str] | None,
        startup_timeout: float,
    ) -> None:
        self._primary_conninfo = make_conninfo(
            host=_HOST,
            port=primary_port,
            user=_SUPERUSER,
            application_name=application_name,
            connect_timeout=2,
        )
        self._slot = application_name
        standby_settings = {
            # Same settings as the primary: a hot standby needs max_connections and a
            # few others at least as high, and the same durability is what a test expects.
            **primary.settings,
            "primary_conninfo": self._primary_conninfo,
            "primary_slot_name": application_name,
            "hot_standby": "on",
            # Once promoted, commit locally (the primary may name standbys by setting).
            "synchronous_standby_names": "",
            **(settings or {}),
        }
        super().__init__(
            # The primary's own install (not the copy it may run from, which goes away
            # with the primary's directory): copied again for this account if need be.
            bindir=primary.bindir,
            source=f"standby of {_HOST}:{primary_port} ({primary.source})",
            durable=primary.durable,
            settings=standby_settings,
            startup_timeout=startup_timeout,
        )

    def _initdb(self, bindir: Path, datadir: Path) -> None:
        """Make the cluster by ``pg_basebackup`` from the primary instead of ``initdb``."""
        exe = bindir / "pg_basebackup"
        if not os.access(exe, os.X_OK):
            raise RuntimeError(
                f"no pg_basebackup beside the primary's postgres in {bindir}: a standby "
                "needs the PostgreSQL client programs of the same install"
            )
        cmd = [str(exe), "--pgdata", str(datadir), "--dbname", self._primary_conninfo]
        cmd += ["--wal-method=stream", "--checkpoint=fast", "--create-slot", "--slot", self._slot]
        cmd.append("--no-password")
        if not self.durable:
            cmd.append("--no-sync")
        self._run_setup("pg_basebackup", cmd)
        signal_file = datadir / "standby.signal"
        signal_file.touch()
        _give(self._account, signal_file)


def _check_primary(conn: psycopg.Connection[Any], *, synchronous: bool) -> None:
    values = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_wal_senders', 'max_replication_slots', 'synchronous_commit')"
        ).fetchall()
    )
    if values.get("wal_level") == "minimal":
        raise RuntimeError("the primary runs with wal_level=minimal; a standby needs replica")
    for name in ("max_wal_senders", "max_replication_slots"):
        if int(values.get(name, "0")) < 1:
            raise RuntimeError(f"the primary runs with {name}=0; a standby needs at least 1")
    if synchronous and values.get("synchronous_commit") in {"off", "local"}:
        raise ValueError(
            f"the primary runs with synchronous_commit={values['synchronous_commit']}, so "
            "its commits would not wait for a synchronous standby; start it with "
            "durable=True or settings={'synchronous_commit': 'on'}"
        )


def _wait_for_standby(
    conn: psycopg.Connection[Any], name: str, synchronous: bool, timeout: float
) -> None:
    query = (
        "SELECT true FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'"
    )
    if synchronous:
        query += " AND sync_state = 'sync'"
    what = "synchronous" if synchronous else "streaming"
    _poll(
        lambda: conn.execute(query, (name,)).fetchone() is not None,
        timeout,
        f"the primary did not report standby {name!r} as {what}",
    )


def _on_primary(
    primary: PostgresServer, what: str, action: Callable[[psycopg.Connection[Any]], None]
) -> None:
    """Run ``action`` on the primary if it still runs (it may have crashed, on purpose)."""
    try:
        with psycopg.connect(primary.dsn, autocommit=True, connect_timeout=2) as conn:
            action(conn)
    except (psycopg.Error, TimeoutError) as exc:
        logger.info("Could not %s on the primary (%s: %s)", what, type(exc).__name__, exc)


def _reset_synchronous(conn: psycopg.Connection[Any]) -> None:
    conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
    conn.execute("SELECT pg_reload_conf()")


def _drop_slot(conn: psycopg.Connection[Any], name: str) -> None:
    # The walsender holds the slot for a moment after the standby stopped.
    query = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
    _poll(
        lambda: not _fetch_bool(conn, query, (name,)),
        _KILL_TIMEOUT,
        f"replication slot {name!r} stayed active",
    )
    conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    )


def _fetch_bool(
    conn: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...]
) -> bool:
    row = conn.execute(query, params).fetchone()
    return row is not None and bool(row[0])


def _poll(predicate: Callable[[], object], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{failure} within {timeout} s")
        time.sleep(_POLL_INTERVAL)
