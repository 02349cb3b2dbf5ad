"""What ``python -m sessionstore stats`` reports; see docs/operations.md#the-stats-command."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg
from psycopg import sql

from ._core import SessionCore
from ._from_dsn import run_steps
from .errors import first_line

__all__ = ["TableStats", "format_stats", "table_stats"]


@dataclasses.dataclass(frozen=True)
class TableStats:
    """One reading of a sessions table; the fields are ``stats --json``'s keys.

    `shards` is None (and left out of `as_json`) for a table Citus does not distribute.
    """

    table: str
    live: int
    expired: int
    oldest_expired_age_s: float | None
    table_bytes: int
    index_bytes: int
    total_bytes: int
    dead_tuples: int
    live_tuples: int
    updates: int
    hot_updates: int
    hot_ratio: float | None
    deletes: int
    last_vacuum: dt.datetime | None
    last_autovacuum: dt.datetime | None
    last_analyze: dt.datetime | None
    last_autoanalyze: dt.datetime | None
    autovacuum_count: int
    options: list[str]
    unlogged: bool
    shards: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The reading as JSON-ready values (datetimes in ISO 8601, UTC)."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.shards is None:
            del out["shards"]
        return {
            key: value.astimezone(dt.UTC).isoformat() if isinstance(value, dt.datetime) else value
            for key, value in out.items()
        }


_CATALOG = sql.SQL(
    "SELECT pg_table_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid), "
    "coalesce(c.reloptions, '{{}}'), c.relpersistence = 'u', "
    "coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0), coalesce(s.n_tup_upd, 0), "
    "coalesce(s.n_tup_hot_upd, 0), coalesce(s.n_tup_del, 0), s.last_vacuum, "
    "s.last_autovacuum, s.last_analyze, s.last_autoanalyze, coalesce(s.autovacuum_count, 0) "
    "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE c.oid = to_regclass({})"
)


#: The same columns for a distributed table, and its shard count: the shards'
#: counters, each read on its worker as one JSON row.
_CITUS_CATALOG = sql.SQL(
    "SELECT citus_table_size(c.oid), "
    "citus_total_relation_size(c.oid) - citus_table_size(c.oid), "
    "citus_total_relation_size(c.oid), coalesce(c.reloptions, '{{}}'), c.relpersistence = 'u', "
    "s.*, (SELECT count(*) FROM pg_dist_shard d WHERE d.logicalrelid = c.oid) "
    "FROM pg_class c, (SELECT "
    + ", ".join(
        f"coalesce(sum((j->>'{name}')::bigint), 0)"
        for name in ("n_dead_tup", "n_live_tup", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")
    )
    + ", "
    + ", ".join(
        f"max((j->>'{name}')::timestamptz)"
        for name in ("last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze")
    )
    + ", coalesce(sum((j->>'autovacuum_count')::bigint), 0) "
    "FROM (SELECT result::json AS j FROM run_command_on_shards({}, "
    "$q$SELECT row_to_json(t) FROM pg_stat_user_tables t WHERE relid = '%s'::regclass$q$) "
    "WHERE success AND result <> '') AS shards) AS s "
    "WHERE c.oid = to_regclass({})"
)


def table_stats(conn: psycopg.Connection[Any], core: SessionCore) -> TableStats:
    """Read the health figures of `core`'s table on `conn` (autocommit or not: it only reads).

    Raises:
        RuntimeError: If the table does not exist or can't be read (the message says
            why, with PostgreSQL's first line).
    """
    # The counts scan the table (an operator's command, not a hot path); the sizes and
    # counters come from catalogs any role can read, or on Citus from each shard.
    counts = sql.SQL(
        "SELECT count(*) FILTER (WHERE current_timestamp < expiry), "
        "count(*) FILTER (WHERE expiry <= current_timestamp), "
        "extract(epoch FROM current_timestamp - min(expiry) "
        "FILTER (WHERE expiry <= current_timestamp))::float8 FROM {}"
    ).format(sql.SQL(core.qualified_name))
    try:
        live, expired, lag = _one(conn, counts)
        name = sql.Literal(core.qualified_name)
        distributed = bool(run_steps(conn, core.detect_steps()))
        catalog = _CITUS_CATALOG.format(name, name) if distributed else _CATALOG.format(name)
        row = _one(conn, catalog)
    except psycopg.errors.UndefinedTable as exc:
        raise RuntimeError(
            f"no table {core.qualified_name}: create it with `python -m sessionstore migrate`"
        ) from exc
    except psycopg.Error as exc:
        raise RuntimeError(f"cannot read {core.qualified_name}: {first_line(exc)}") from exc
    updates, hot = int(row[7]), int(row[8])
    return TableStats(
        table=core.qualified_name,
        live=int(live),
        expired=int(expired),
        oldest_expired_age_s=None if lag is None else float(lag),
        table_bytes=int(row[0]),
        index_bytes=int(row[1]),
        total_bytes=int(row[2]),
        options=list(row[3]),
        unlogged=bool(row[4]),
        dead_tuples=int(row[5]),
        live_tuples=int(row[6]),
        updates=updates,
        hot_updates=hot,
        hot_ratio=hot / updates if updates else None,
        deletes=int(row[9]),
        last_vacuum=row[10],
        last_autovacuum=row[11],
        last_analyze=row[12],
        last_autoanalyze=row[13],
        autovacuum_count=int(row[14]),
        shards=int(row[15]) if distributed else None,
    )


def _one(conn: psycopg.Connection[Any], query: sql.Composed) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    if row is None:  # the catalog query finds no row only if the table vanished meanwhile
        raise psycopg.errors.UndefinedTable("the table vanished while being read")
    return tuple(row)


def format_stats(stats: TableStats) -> str:
    """The reading as lines of text for a terminal."""

    def size(n: int) -> str:
        if n < 1024:
            return f"{n:,} B"
        value = n / 1024
        for unit in ("KiB", "MiB"):
            if value < 1024:
                return f"{value:,.1f} {unit}"
            value /= 1024
        return f"{value:,.1f} GiB"

    def when(value: dt.datetime | None) -> str:
        return "never" if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")

    age = stats.oldest_expired_age_s
    lag = "none expired" if age is None else f"{age:,.0f} s ago"
    hot = "no updates yet" if stats.hot_ratio is None else f"{100 * stats.hot_ratio:.1f}%"
    lines = [
        f"table: {stats.table}" + (" (UNLOGGED)" if stats.unlogged else ""),
        f"sessions: {stats.live:,} live, {stats.expired:,} expired (not yet purged)",
        f"oldest expired session: {lag}",
        f"size: table {size(stats.table_bytes)}, indexes {size(stats.index_bytes)}, "
        f"total {size(stats.total_bytes)}",
        f"row versions: {stats.live_tuples:,} live, {stats.dead_tuples:,} dead (estimates)",
        f"updates: {stats.updates:,}, HOT {hot}; deletes: {stats.deletes:,}",
        f"last vacuum: {when(stats.last_vacuum)}; last autovacuum: "
        f"{when(stats.last_autovacuum)} ({stats.autovacuum_count} in all)",
        f"last analyze: {when(stats.last_analyze)}; last autoanalyze: "
        f"{when(stats.last_autoanalyze)}",
        "storage options: " + (", ".join(stats.options) if stats.options else "defaults"),
    ]
    if stats.shards is not None:
        lines.append(
            f"distributed: {stats.shards} shards (Citus; sizes and counters summed over them)"
        )
    return "\n".join(lines) + "\n"
