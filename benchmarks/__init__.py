"""Benchmarks of sessionstore: ``python -m benchmarks`` weighs `Store` and `AsyncStore`
against raw psycopg and pgbench, ``python -m benchmarks.web`` whole requests of each
framework integration against the framework's own stores; see docs/performance.md."""
