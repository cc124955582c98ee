"""What every command module shares: how a line reaches the user, the common options."""
from __future__ import annotations

import os

from orchestrator.execution import backends


def say(line: str) -> None:
    print(line, flush=True)


SYNTHETIC_ONLY_HELP = ("only the suite's runs on synthetic data (e.g. the speed half of an "
                       "input-bound suite on a machine without the dataset)")


def add_backend_options(p) -> None:
    """--backend, --results and --no-build, as `run` and `check` take them."""
    p.add_argument("--backend", default=os.environ.get("BACKEND") or "auto", help=backends.backend_help())
    p.add_argument("--results", help="results root (default: results/ or $DLBENCH_RESULTS)")
    p.add_argument("--no-build", action="store_true", help="use existing images only")
