"""The web benchmark: ``python -m benchmarks.web`` (see ``--help``)."""
