"""The web benchmark: ``python -m benchmarks.web`` (see ``--help``).

Requests/s, p50/p99 latency and PostgreSQL's WAL bytes per request, at 1, 16 and 64
concurrent clients, each with its own keep-alive connection and session cookie, of
three workloads: ``GET /count`` on every request (read an integer from the session,
add one, store it, return it), ``GET /read`` only (return it, after one ``/count``
created the session), and nine reads per ``/count``; for sessionstore's integration
with each framework (renewing expiry when due, and on every request) against that
framework's own session stores, its usual Redis store, and the framework with no
session at all (the ceiling of one worker). Cells interleave their contenders round
by round, every round records the host's steal and the other processes' load, and
noisy rounds are left out and measured once more, as in ``python -m benchmarks``.

Modules:

- `benchmarks.web.cli`: the command line, the database set-up (a schema of its own,
  tables preloaded as the other benchmarks preload theirs), the rounds, the WAL
  position read around each window, the report.
- `benchmarks.web.redis_server`: the Redis contenders' ``redis-server``, started and
  stopped by the benchmark.
- `benchmarks.web.contenders`: which framework, store and server each contender is.
- `benchmarks.web.apps`, `benchmarks.web.django_site`: the apps (imported only in
  the server processes).
- `benchmarks.web.serve`: the server process (one worker: uvicorn, aiohttp's
  runner, or gunicorn with one gthread worker).
- `benchmarks.web.server`: starting it on a socket bound by the benchmark, stopping
  it, checking that none of its processes is left.
- `benchmarks.web.client`: the load generator (raw asyncio HTTP/1.1 keep-alive
  clients with cookie jars, every answer checked).
- `benchmarks.web.report`: medians, ratios to the default and the Redis store, the
  tables.
"""
