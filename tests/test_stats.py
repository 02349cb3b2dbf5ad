"""``python -m sessionstore stats``: the table's health, as root and as a read-only role."""

from __future__ import annotations

import json
import socket
from typing import Any

import psycopg
from test_cli import run

#: The JSON keys `stats --json` prints (documented in docs/operations.md).
KEYS = {
    "table",
    "live",
    "expired",
    "oldest_expired_age_s",
    "table_bytes",
    "index_bytes",
    "total_bytes",
    "dead_tuples",
    "live_tuples",
    "updates",
    "hot_updates",
    "hot_ratio",
    "deletes",
    "last_vacuum",
    "last_autovacuum",
    "last_analyze",
    "last_autoanalyze",
    "autovacuum_count",
    "options",
    "unlogged",
}


def fill(db: psycopg.Connection[Any]) -> None:
    """5 live and 3 expired sessions; 4 updates and 1 delete leave dead row versions."""
    db.execute(
        "INSERT INTO sessions SELECT 'live-' || g, 'x', now() + interval '1 hour' "
        "FROM generate_series(1, 5) g"
    )
    db.execute(
        "INSERT INTO sessions SELECT 'old-' || g, 'x', now() - g * interval '1 hour' "
        "FROM generate_series(1, 3) g"
    )
    db.execute("UPDATE sessions SET data = 'y' WHERE token IN ('live-1', 'live-2', 'live-3')")
    db.execute("UPDATE sessions SET expiry = expiry + interval '1 minute' WHERE token = 'live-4'")
    db.execute("DELETE FROM sessions WHERE token = 'old-3'")  # the oldest: 2 h is left
    # The statistics collector's counters are sent when a backend goes idle, at most
    # once a second; this makes this backend send them before its next reply.
    db.execute("SELECT pg_stat_force_next_flush()")


def stats_json(dsn: str) -> dict[str, Any]:
    result = run("stats", "--dsn", dsn, "--json")
    assert result.returncode == 0, result.stderr
    reading: dict[str, Any] = json.loads(result.stdout)
    return reading


def test_stats_counts_live_expired_and_dead_rows(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    fill(db)
    reading = stats_json(sessionstore_dsn)
    assert set(reading) == KEYS
    assert reading["table"] == '"sessions"'
    assert (reading["live"], reading["expired"]) == (5, 2)
    assert 2 * 3600 - 60 < reading["oldest_expired_age_s"] < 2 * 3600 + 600
    assert (reading["updates"], reading["deletes"]) == (4, 1)
    assert reading["dead_tuples"] >= 1
    assert 0 <= reading["hot_updates"] <= 4
    assert reading["hot_ratio"] == reading["hot_updates"] / 4
    assert reading["total_bytes"] >= reading["table_bytes"] + reading["index_bytes"] > 0
    assert reading["options"] == []
    assert reading["unlogged"] is False
    assert reading["last_vacuum"] is None

    db.execute("VACUUM sessions")
    db.execute("ALTER TABLE sessions SET (fillfactor = 70)")
    db.execute("SELECT pg_stat_force_next_flush()")
    after = stats_json(sessionstore_dsn)
    assert after["last_vacuum"] is not None
    assert after["dead_tuples"] == 0
    assert after["options"] == ["fillfactor=70"]

    text = run("stats", "--dsn", sessionstore_dsn)
    assert text.returncode == 0, text.stderr
    assert "sessions: 5 live, 2 expired (not yet purged)" in text.stdout
    assert "oldest expired session: 7," in text.stdout  # 7,200 s and some
    assert "storage options: fillfactor=70" in text.stdout


def test_stats_needs_only_select(sessionstore_dsn: str, db: psycopg.Connection[Any]) -> None:
    fill(db)
    db.execute("CREATE ROLE stats_reader LOGIN")
    db.execute("GRANT SELECT ON sessions TO stats_reader")
    try:
        dsn = psycopg.conninfo.make_conninfo(sessionstore_dsn, user="stats_reader")
        with psycopg.connect(dsn) as conn:  # the role really can't write
            row = conn.execute("SELECT has_table_privilege('sessions', 'UPDATE')").fetchone()
            assert row == (False,)
        reading = stats_json(dsn)
        assert (reading["live"], reading["expired"]) == (5, 2)
        assert (reading["updates"], reading["deletes"]) == (4, 1)
    finally:
        db.execute("DROP OWNED BY stats_reader")
        db.execute("DROP ROLE stats_reader")


def test_stats_of_a_missing_table_says_how_to_create_it(sessionstore_dsn: str) -> None:
    result = run("stats", "--dsn", sessionstore_dsn, "--table", "nowhere")
    assert result.returncode == 1
    assert 'no table "nowhere"' in result.stderr
    assert "migrate" in result.stderr


def test_stats_without_a_server_fails_clearly() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("stats", "--dsn", f"host=127.0.0.1 port={port} dbname=x connect_timeout=2")
    assert result.returncode == 1
    assert result.stderr.startswith("sessionstore: error:")
    assert "Connection refused" in result.stderr or "connection" in result.stderr.lower()
