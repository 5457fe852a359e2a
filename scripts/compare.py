"""Compare fed-opc runs: ``python scripts/compare.py runs/a runs/b [--metrics UA RA TA MIA avg_gap] [--markdown FILE]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from strategies.reporting.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="compare.py"))
