"""Benchmarks of sessionstore: ``python -m benchmarks`` (see ``--help``).

Measures find, commit, a 90/10 find/commit mix and delete on a preloaded sessions
table, at several concurrency levels, for `Store` (threads) and `AsyncStore` (asyncio)
beside the plain psycopg pattern (autocommit pool and default pool) and pgbench, in
interleaved rounds; optionally (``--scale``) find latency from 10k to 1M rows and the
cost of reading every session. Modules:

- `benchmarks.cli`: the command line and the report on the terminal, JSON and the chart.
- `benchmarks.runner`: settings, table setup, the rounds.
- `benchmarks.contenders`: the contenders and their pools.
- `benchmarks.measure`: the timed worker loops (threads and asyncio tasks).
- `benchmarks.pgbench`: pgbench scripts and log parsing.
- `benchmarks.workload`: deterministic tokens, preload with COPY, the delete pool.
- `benchmarks.report`, `benchmarks.plot`: summaries, comparisons, the chart.
- `benchmarks.scale`: the ``--scale`` part.
- `benchmarks.web`: requests/s and latency of a session-updating view over HTTP, for
  sessionstore's integrations against each framework's own session stores
  (``python -m benchmarks.web``).
"""
