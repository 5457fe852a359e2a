"""``python -m strategies.reporting RUN_DIR``: rebuild the report of a finished run from its results.json."""

import sys

from strategies.reporting.report import main

if __name__ == "__main__":
    sys.exit(main())
