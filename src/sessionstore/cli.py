"""The command line, ``python -m sessionstore``: see docs/cli.md (and docs/demo.md)."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import psycopg

from . import __version__
from ._core import DEFAULT_PURGE_BATCH_SIZE, DEFAULT_TABLE, SessionCore
from ._from_dsn import CONNECT_TIMEOUT, connect_store, create_table, distribute_table
from ._table_report import format_stats, table_stats
from .errors import SessionStoreError
from .schema import ddl
from .store import Store

if TYPE_CHECKING:
    from .crypto import Keyring

DSN_ENV = "SESSIONSTORE_DSN"
KEYS_ENV = "SESSIONSTORE_KEYS"
_EPILOG = "Exit status: 0 on success, 1 if an operation failed, 2 on a usage error."
#: libpq's variables that name a server (the others, PGPASSWORD..., choose none), and
#: their conninfo keywords.
LIBPQ_ENV = {
    "PGHOST": "host",
    "PGHOSTADDR": "hostaddr",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGSERVICE": "service",
}


class CheckFailed(Exception):
    """A step of ``check`` saw a wrong answer."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sessionstore",
        description="PostgreSQL session store: schema, migration, checks and cleanup.",
    )
    parser.add_argument("--version", action="version", version=f"sessionstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default_dsn, _ = _default_dsn()

    def add(name: str, help: str, *, dsn: str | None = None) -> argparse.ArgumentParser:
        """Add a command; `dsn` is "required", "optional", or None for no --dsn."""
        sub = commands.add_parser(name, help=help, description=help, epilog=_EPILOG)
        if dsn is not None:
            without = "; else a throw-away PostgreSQL" if dsn == "optional" else ""
            sub.add_argument(
                "--dsn",
                # None here: main() fills in the default and remembers where it came from.
                required=dsn == "required" and default_dsn is None,
                help=f"libpq connection string or URL (default: ${DSN_ENV}, "
                f"else libpq's PG* variables){without}",
            )
        sub.add_argument("--table", default=DEFAULT_TABLE, help="table name (default: sessions)")
        sub.add_argument("--schema", default=None, help="schema name (default: the search_path)")
        return sub

    schema = add("schema", "Print the DDL of the sessions table and its index.")
    migrate = add("migrate", "Create the schema, table and index if missing.", dsn="required")
    owners = "with the owner column and its index, for sessions per user"
    for sub in (schema, migrate):
        sub.add_argument("--owners", action="store_true", help=owners)
    migrate.add_argument(
        "--distributed", action="store_true", help="then distribute the table by token with Citus"
    )
    add(
        "check",
        "Run a round trip (commit, find, expiry, all, purge, delete) and time each step.",
        dsn="optional",
    )
    purge = add("purge", "Delete expired sessions once and print how many.", dsn="required")
    reencrypt = add(
        "reencrypt",
        f"Rewrite the sessions not under the first of ${KEYS_ENV} (base64url keys, "
        "comma-separated) and print how many.",
        dsn="required",
    )
    for sub, statement in ((purge, "DELETE removes"), (reencrypt, "UPDATE rewrites")):
        sub.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_PURGE_BATCH_SIZE,
            help=f"most sessions one {statement} (default: {DEFAULT_PURGE_BATCH_SIZE})",
        )
    stats = add(
        "stats",
        "Report the table's health: live and expired sessions, how far the cleanup lags, "
        "sizes, dead rows, vacuums, HOT updates (needs only SELECT).",
        dsn="required",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object instead")
    demo = add(
        "demo",
        "Serve the example app (/put, /get) until Ctrl-C; creates the table.",
        dsn="optional",
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    demo.add_argument("--port", type=int, default=4000, help="port to listen on (default: 4000)")
    demo.add_argument(
        "--framework",
        choices=("starlette", "flask", "litestar", "aiohttp", "quart", "django"),
        default="starlette",
        help="the web framework (default: starlette)",
    )
    return parser


def _default_dsn() -> tuple[str | None, str]:
    """The DSN to use without ``--dsn`` (None if nothing names a server), and its source."""
    env_dsn = os.environ.get(DSN_ENV)
    if env_dsn:
        return env_dsn, f"${DSN_ENV}"
    names = [name for name in LIBPQ_ENV if os.environ.get(name)]
    if not names:
        return None, ""
    # Spelled out rather than "" (which libpq would fill from the same variables), so that
    # code testing "was a DSN given?" sees one.
    dsn = psycopg.conninfo.make_conninfo(**{LIBPQ_ENV[n]: os.environ[n] for n in names})
    return dsn, "libpq's environment (" + ", ".join(f"${n}" for n in names) + ")"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    if "dsn" in vars(args):
        args.dsn_source = "--dsn"
        if args.dsn is None:
            args.dsn, args.dsn_source = _default_dsn()
    try:
        # Refuse bad names, sizes and keys before connecting: a usage error.
        SessionCore(args.table, args.schema, purge_batch_size=getattr(args, "batch_size", 1))
        keyring = _keyring_from_env() if args.command == "reencrypt" else None
    except (ValueError, TypeError, ImportError) as exc:
        print(f"sessionstore: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "schema":
            sys.stdout.write(ddl(args.table, args.schema, owners=args.owners))
        elif args.command == "migrate":
            name, created = create_table(args.dsn, args.table, args.schema, owners=args.owners)
            print(f"{'created' if created else 'already up to date'}: {name}")
            if args.distributed:
                done = distribute_table(args.dsn, args.table, args.schema)
                print(f"{'distributed by token' if done else 'already distributed'}: {name}")
        elif args.command == "check":
            return _check(args, sys.stdout)
        elif args.command == "purge":
            with connect_store(args.dsn, args.table, args.schema) as store:
                deleted = store.try_purge_expired(batch_size=args.batch_size)
            skipped = "0 (skipped: another purge of this table is running)"
            print(skipped if deleted is None else deleted)
        elif args.command == "reencrypt":
            with connect_store(args.dsn, args.table, args.schema, encryption=keyring) as store:
                print(store.reencrypt(batch_size=args.batch_size))
        elif args.command == "stats":
            with psycopg.connect(
                args.dsn, autocommit=True, connect_timeout=round(CONNECT_TIMEOUT)
            ) as conn:
                reading = table_stats(conn, SessionCore(args.table, args.schema))
            if args.json:
                print(json.dumps(reading.as_json(), indent=2))
            else:
                sys.stdout.write(format_stats(reading))
        elif args.command == "demo":
            from .demo import run

            return run(
                dsn=args.dsn,
                host=args.host,
                port=args.port,
                framework=args.framework,
                table=args.table,
                schema=args.schema,
            )
    except (SessionStoreError, psycopg.Error, ValueError, TypeError, RuntimeError) as exc:
        print(f"sessionstore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sessionstore: interrupted", file=sys.stderr)
        return 130
    return 0


def _keyring_from_env() -> Keyring:
    """The `Keyring` of ``$SESSIONSTORE_KEYS``; errors never show a key."""
    from .crypto import Keyring

    text = os.environ.get(KEYS_ENV, "").strip()
    if not text:
        raise ValueError(
            f"reencrypt needs the keys in ${KEYS_ENV}: comma-separated base64url, the one "
            "to encrypt with first"
        )
    keys = []
    for position, part in enumerate(text.split(","), 1):
        part = part.strip()
        try:
            # Padding optional; validate=True refuses what b64decode would skip over.
            keys.append(base64.b64decode(part + "=" * (-len(part) % 4), b"-_", validate=True))
        except binascii.Error:
            raise ValueError(f"${KEYS_ENV}: key {position} is not base64url") from None
    try:
        return Keyring(*keys)
    except ValueError as exc:
        raise ValueError(f"${KEYS_ENV}: {exc}") from None


def _check(args: argparse.Namespace, out: TextIO) -> int:
    with contextlib.ExitStack() as stack:
        if args.dsn:
            dsn, source, throwaway = args.dsn, f"the server given by {args.dsn_source}", False
        else:
            from .testing import ephemeral_postgres

            print(
                "no --dsn, $SESSIONSTORE_DSN or PG* variables: starting a throw-away PostgreSQL",
                file=out,
            )
            server = stack.enter_context(ephemeral_postgres(env_var=None))
            dsn, source, throwaway = server.dsn, server.source, True
        print(f"server: {source}", file=out)
        store = stack.enter_context(connect_store(dsn, args.table, args.schema))
        print(f"table:  {store.name}", file=out)
        failures = _run_steps(store, throwaway, out)
    if failures:
        print(f"check failed: {failures} step(s) failed", file=out)
        return 1
    print("check passed: the store works on this server", file=out)
    return 0


def _run_steps(store: Store, create: bool, out: TextIO) -> int:
    live, expired = "check-" + secrets.token_urlsafe(32), "check-" + secrets.token_urlsafe(32)
    payload = secrets.token_bytes(200)
    now = dt.datetime.now(dt.UTC)
    steps: list[tuple[str, Callable[[], object]]] = []
    if create:
        steps.append(("create_table", store.create_table))
    steps += [
        ("commit", lambda: store.commit(live, payload, now + dt.timedelta(minutes=5))),
        ("find", lambda: _expect(store.find(live) == payload, "find returned other data")),
        ("expiry", lambda: _expiry(store, expired, now)),
        ("all", lambda: _expect(live in store.all(), "all() misses the live session")),
        ("purge_expired", lambda: _expect(store.purge_expired() >= 1, "nothing purged")),
        ("delete", lambda: _deleted(store, live)),
    ]
    failures = 0
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            step()
        except (SessionStoreError, CheckFailed, psycopg.Error) as exc:
            failures += 1
            print(f"  {name:<14} FAILED  {exc}", file=out)
            if isinstance(exc, SessionStoreError | psycopg.Error):
                break  # the database refused: later steps would only repeat it
        else:
            ms = (time.perf_counter() - t0) * 1000
            print(f"  {name:<14} ok  {ms:8.2f} ms", file=out)
    with contextlib.suppress(SessionStoreError):
        store.delete(live)
        store.delete(expired)
    return failures


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def _expiry(store: Store, token: str, now: dt.datetime) -> None:
    store.commit(token, b"expired", now - dt.timedelta(seconds=1))
    _expect(store.find(token) is None, "an expired session was found")


def _deleted(store: Store, token: str) -> None:
    store.delete(token)
    _expect(store.find(token) is None, "the deleted session was found")
