"""Run the web benchmark: ``python -m benchmarks.web --help``."""

import sys

from .cli import main

sys.exit(main())
