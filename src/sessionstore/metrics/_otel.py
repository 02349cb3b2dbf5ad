"""The OpenTelemetry recorder (the ``otel`` extra: ``opentelemetry-api`` only).

It records OpenTelemetry's stable database-client metric,
``db.client.operation.duration`` (seconds), with the attributes its semantic
conventions name, plus a few counters of the store's own. The application picks
the SDK, the exporter and the meter provider; a library only talks to the API.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import metrics

from .. import __version__
from . import Recorder

#: The semantic conventions' recommended boundaries for db.client.operation.duration.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

#: A combined statement serves 2 to `_concurrency.MAX_BATCH` (64) calls.
BATCH_BUCKETS = (2, 4, 8, 16, 32, 64)


class OpenTelemetryRecorder(Recorder):
    """Record a store's operations as OpenTelemetry metrics.

    A store builds one itself when ``opentelemetry-api`` is installed and no
    ``on_operation`` is given; pass one as ``on_operation`` to record on a
    meter provider other than the global one.

    Instruments (every one carries ``db.system.name="postgresql"`` and
    ``db.collection.name``, the table, schema-qualified if a schema is set):

    - ``db.client.operation.duration`` (histogram, s), per operation, with
      ``db.operation.name`` and, on failure, ``error.type`` (the SQLSTATE, else
      the exception's class) and ``db.response.status_code`` (the SQLSTATE);
    - ``sessionstore.batch.size`` (histogram, {call}): calls per combined
      statement, with ``db.operation.name``;
    - ``sessionstore.retries`` (counter, {retry}): statements run again after a
      broken connection, with ``db.operation.name``;
    - ``sessionstore.purge.rows`` (counter, {row}), ``sessionstore.purge.rounds``
      (counter, {statement}) and ``sessionstore.purge.skips`` (counter, {purge}:
      purges left to another purge of the table).

    Args:
        meter_provider: Where to record; None for the global one (which may be
            set after the store is built).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        self._meter_provider = meter_provider
        self._collection = ""
        meter = metrics.get_meter("sessionstore", __version__, meter_provider)
        self._duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._batch = meter.create_histogram(
            "sessionstore.batch.size",
            unit="{call}",
            description="Concurrent calls served by one combined statement.",
            explicit_bucket_boundaries_advisory=[float(b) for b in BATCH_BUCKETS],
        )
        counters = (
            ("sessionstore.retries", "{retry}", "Statements run again after a broken connection."),
            ("sessionstore.purge.rows", "{row}", "Expired sessions purged."),
            ("sessionstore.purge.rounds", "{statement}", "Purge statements run."),
            (
                "sessionstore.purge.skips",
                "{purge}",
                "Purges left to another purge of the same table.",
            ),
        )
        self._retries, self._purge_rows, self._purge_rounds, self._purge_skips = (
            meter.create_counter(name, unit=unit, description=text) for name, unit, text in counters
        )
        self._base: dict[str, str] = {}
        # Per operation: its attributes, built once (an operation name is one of a few).
        self._attributes: dict[str, Mapping[str, str]] = {}

    def for_store(self, collection: str) -> OpenTelemetryRecorder:
        """A recorder for one store: these instruments, labelled with its table `collection`."""
        bound = object.__new__(OpenTelemetryRecorder)
        bound.__dict__.update(self.__dict__)
        bound._collection = collection
        bound._base = {"db.system.name": "postgresql", "db.collection.name": collection}
        bound._attributes = {}
        return bound

    def _of(self, operation: str) -> Mapping[str, str]:
        attributes = self._attributes.get(operation)
        if attributes is None:
            attributes = {**self._base, "db.operation.name": operation}
            self._attributes[operation] = attributes
        return attributes

    def __call__(self, operation: str, seconds: float, error_type: str | None) -> None:
        """Record one operation's duration (see `Recorder.__call__`)."""
        if error_type is None:
            self._duration.record(seconds, self._of(operation))
            return
        failed = {**self._of(operation), "error.type": error_type}
        if _is_sqlstate(error_type):
            failed["db.response.status_code"] = error_type
        self._duration.record(seconds, failed)

    def batch(self, operation: str, size: int) -> None:
        """Record a combined statement's size (see `Recorder.batch`)."""
        self._batch.record(size, self._of(operation))

    def retry(self, operation: str) -> None:
        """Count a retry (see `Recorder.retry`)."""
        self._retries.add(1, self._of(operation))

    def purge(self, rows: int | None, rounds: int) -> None:
        """Count a purge's rows, rounds or skip (see `Recorder.purge`)."""
        attributes = self._of("purge")
        if rows is None:
            self._purge_skips.add(1, attributes)
        else:
            self._purge_rows.add(rows, attributes)
        self._purge_rounds.add(rounds, attributes)


def _is_sqlstate(error_type: str) -> bool:
    # SQLSTATEs are five characters of digits and capitals; class names have a dot.
    return len(error_type) == 5 and error_type.isalnum() and error_type.upper() == error_type
