"""A Prometheus collector for a store's pool and cleanup; see docs/operations.md#prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..cleanup import CleanupStats

__all__ = ["StoreCollector"]


class _Pool(Protocol):
    def get_stats(self) -> dict[str, int]: ...


@runtime_checkable
class _Store(Protocol):
    """What the collector reads of a `Store` or `AsyncStore`: public properties only."""

    @property
    def table(self) -> str: ...
    @property
    def schema(self) -> str | None: ...
    @property
    def pool(self) -> _Pool: ...
    @property
    def cleanup(self) -> object: ...


_Family = type[GaugeMetricFamily] | type[CounterMetricFamily]

#: The pool's gauges: (get_stats key, metric name, help).
_POOL_GAUGES = (
    ("pool_min", "pool_min", "The pool's min_size."),
    ("pool_max", "pool_max", "The pool's max_size."),
    ("pool_size", "pool_size", "Connections in the pool, in use or idle (or being made)."),
    ("pool_available", "pool_available", "Idle connections in the pool."),
    ("requests_waiting", "pool_requests_waiting", "Callers waiting for a connection now."),
)

#: The pool's counters, since the pool opened: (key, name, help, scale to the unit).
_POOL_COUNTERS = (
    ("requests_num", "pool_requests", "Connections requested from the pool.", 1.0),
    ("requests_queued", "pool_requests_queued", "Requests that had to wait.", 1.0),
    ("requests_errors", "pool_requests_errors", "Requests that failed (timeout...).", 1.0),
    ("requests_wait_ms", "pool_requests_wait_seconds", "Time spent waiting.", 1e-3),
    ("usage_ms", "pool_usage_seconds", "Time connections were out of the pool.", 1e-3),
    ("returns_bad", "pool_returns_bad", "Connections returned in a bad state.", 1.0),
    ("connections_num", "pool_connections", "Connection attempts to the server.", 1.0),
    ("connections_errors", "pool_connections_errors", "Failed connection attempts.", 1.0),
    ("connections_ms", "pool_connections_seconds", "Time spent connecting.", 1e-3),
    ("connections_lost", "pool_connections_lost", "Connections found broken.", 1.0),
)

#: The cleanup's counters: (`CleanupStats` field, name, help).
_CLEANUP_COUNTERS = (
    ("runs", "cleanup_runs", "Purges attempted."),
    ("rows_deleted", "cleanup_rows_deleted", "Expired sessions the cleanup deleted."),
    ("skipped", "cleanup_skipped", "Purges left to another store purging the table."),
    ("errors", "cleanup_errors", "Failed purges."),
)


class StoreCollector(Collector):
    """Expose a `Store`'s or `AsyncStore`'s pool and cleanup figures, read at each scrape.

    Every metric carries a ``table`` label (schema-qualified if a schema is set),
    so one registry can hold the collectors of several stores.

    Raises:
        TypeError: If `store` is not a store.
    """

    def __init__(self, store: _Store, *, prefix: str = "sessionstore") -> None:
        if not isinstance(store, _Store):
            raise TypeError(f"store must be a Store or AsyncStore, not {type(store).__name__}")
        self._store = store
        self._prefix = prefix
        self._table = store.table if store.schema is None else f"{store.schema}.{store.table}"

    def collect(self) -> Iterator[Metric]:
        """One metric family per figure, read now."""
        # get_stats, never pop_stats (which would reset the application's counters);
        # it holds only the non-zero keys.
        stats = self._store.pool.get_stats()
        for key, name, text in _POOL_GAUGES:
            yield self._one(GaugeMetricFamily, name, text, stats.get(key, 0))
        for key, name, text, scale in _POOL_COUNTERS:
            yield self._one(CounterMetricFamily, name, text, stats.get(key, 0) * scale)
        # A custom strategy need not keep stats: then there are none to show.
        cleanup = getattr(self._store.cleanup, "stats", None)
        if not isinstance(cleanup, CleanupStats):
            return
        for field, name, text in _CLEANUP_COUNTERS:
            yield self._one(CounterMetricFamily, name, text, getattr(cleanup, field))
        last_run = None if cleanup.last_run is None else cleanup.last_run.timestamp()
        for name, text, value in (
            ("last_run_timestamp_seconds", "When the last purge started (Unix time).", last_run),
            ("last_duration_seconds", "How long the last purge took.", cleanup.last_duration),
        ):
            if value is not None:  # until the first purge
                yield self._one(GaugeMetricFamily, f"cleanup_{name}", text, value)

    def _one(self, family: _Family, name: str, text: str, value: float) -> Metric:
        metric = family(f"{self._prefix}_{name}", text, labels=["table"])
        metric.add_metric([self._table], float(value))
        return metric
