"""Run a fed-opc scenario: ``python scripts/simulate.py scenarios/cifar10_100clients.yaml [--out DIR] [--resume]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from strategies.cli import simulate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:], prog="simulate.py"))
