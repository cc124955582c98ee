"""What every command module shares: how a line reaches the user, the common options.

Every line the CLI prints goes through `printable`: names, messages and ids come from suite
files and bundles that anyone may have written, and a raw ESC, CR or BEL in them would
drive the terminal (recolour, overwrite or hide what dlbench says) instead of showing.
"""
from __future__ import annotations

import os
import re
import sys

from orchestrator.execution import backends
from orchestrator.plan.rules import ALLOW_LARGE_FLAG, MAX_RUNS

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates (text shown in another order than it is stored).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """The text with every terminal control character shown escaped (ESC as \\x1b); tabs
    and newlines stay."""
    return _CONTROL.sub(_escape, text)


def say(line: str) -> None:
    print(printable(line), flush=True)


def warn(line: str) -> None:
    """A warning: printed on stderr before anything runs, and the command goes on."""
    print(f"dlbench: warning: {printable(line)}", file=sys.stderr, flush=True)


SYNTHETIC_ONLY_HELP = ("only the suite's runs on synthetic data (e.g. the speed half of an "
                       "input-bound suite on a machine without the dataset)")
ALLOW_LARGE_HELP = (f"plan or run a suite of more than {MAX_RUNS:,} runs (without "
                    f"{ALLOW_LARGE_FLAG}, such a suite is refused as a likely mistake in its "
                    "matrix or repeats)")


def add_backend_options(p) -> None:
    """--backend, --results and --no-build, as `run` and `check` take them."""
    p.add_argument("--backend", default=os.environ.get("BACKEND") or "auto", help=backends.backend_help())
    p.add_argument("--results", help="results root (default: results/ or $DLBENCH_RESULTS)")
    p.add_argument("--no-build", action="store_true", help="use existing images only")
