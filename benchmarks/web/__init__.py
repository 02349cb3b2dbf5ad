"""The web benchmark, ``python -m benchmarks.web``: requests/s, latency and WAL per request
of session-reading and -updating views, for sessionstore's integrations against each
framework's own session stores and its Redis store; see docs/performance.md#web-requests."""
