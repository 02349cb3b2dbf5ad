"""Django's ``db`` session backend against this engine: ``python -m benchmarks.django_engine``.

One thread, one connection each, on a throw-away PostgreSQL, in interleaved rounds:
the time of a request's session work, measured through Django's own ``SessionStore``
classes, for a new session (``save()`` of a session with no key: Django's ``db``
backend asks whether a random key exists, then INSERTs in a transaction) and for an
existing one (load, then ``save()``: a SELECT, then an UPDATE in a transaction).
sessionstore's engine does one statement for each step.

Each round records the CPU stolen by the host and the machine's load
(`benchmarks.noise`); rounds with more than 10% steal are left out of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from sessionstore._from_dsn import create_table
from sessionstore.testing import ephemeral_postgres

from .noise import Meter, Noise

MAX_STEAL = 0.10


def _cycle(cls: Any, key: str | None = None) -> str:
    """One request's session work: read a counter (loads), write it (saves)."""
    session = cls(key)
    session["n"] = session.get("n", 0) + 1
    session.save()
    key = session.session_key
    assert key is not None
    return key


def run(sessions: int, rounds: int) -> dict[str, list[tuple[float, float, Noise]]]:
    """Time both engines; per engine and round: µs per new and per existing session."""
    import django
    from django.conf import settings

    with ephemeral_postgres(env_var=None) as server:
        info = psycopg.conninfo.conninfo_to_dict(server.dsn)
        create_table(server.dsn)
        settings.configure(
            SECRET_KEY="benchmark",
            USE_TZ=True,
            INSTALLED_APPS=["django.contrib.sessions"],
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": info["dbname"],
                    "USER": info.get("user") or "",
                    "PASSWORD": info.get("password") or "",
                    "HOST": info["host"],
                    "PORT": info["port"],
                }
            },
            SESSIONSTORE={"min_size": 1, "max_size": 1},  # the DSN: from DATABASES
        )
        django.setup()
        from django.contrib.sessions.backends.db import SessionStore as DbStore
        from django.core.management import call_command
        from django.db import connection

        from sessionstore.integrations.django import SessionStore as EngineStore
        from sessionstore.integrations.django import close

        call_command("migrate", "sessions", verbosity=0)
        engines: dict[str, Any] = {"db": DbStore, "sessionstore": EngineStore}
        results: dict[str, list[tuple[float, float, Noise]]] = {name: [] for name in engines}
        try:
            for _ in range(rounds):
                for name, cls in engines.items():
                    _cycle(cls)  # connected and warm
                    meter = Meter()
                    started = time.perf_counter()
                    keys = [_cycle(cls) for _ in range(sessions)]
                    new = (time.perf_counter() - started) / sessions
                    started = time.perf_counter()
                    for key in keys:
                        _cycle(cls, key)
                    existing = (time.perf_counter() - started) / sessions
                    results[name].append((new * 1e6, existing * 1e6, meter.read()))
        finally:
            connection.close()
            close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.django_engine")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = run(args.sessions, args.rounds)
    for name, samples in results.items():
        kept = [s for s in samples if not s[2].noisy(MAX_STEAL)] or samples
        new = statistics.median(s[0] for s in kept)
        existing = statistics.median(s[1] for s in kept)
        noise = "; ".join(s[2].describe() for s in samples)
        print(
            f"{name:<13} new session {new:6.0f} us   existing (load + save) {existing:6.0f} us"
            f"   ({len(kept)}/{len(samples)} rounds kept: {noise})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
