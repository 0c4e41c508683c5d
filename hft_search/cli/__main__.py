"""``python -m hft_search.cli``: what the workers, benchmarks and tests start as a subprocess."""

import sys

from hft_search.cli import main

sys.exit(main())
