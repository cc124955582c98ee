"""Running the real `dlbench` command the way a user does, and reading what it left."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from orchestrator.paths import REPO_ROOT

DLBENCH = [sys.executable, "-m", "orchestrator.cli"]


def dlbench(*args, env=None, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([*DLBENCH, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def write_suite(tmp_path: Path, text: str, name="suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def only_results_dir(root: Path) -> Path:
    dirs = [p for p in root.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def runs(results: Path) -> dict[str, dict]:
    """run id -> {'record': run.json, 'metrics': metrics.json or None}."""
    out = {}
    for run_dir in sorted((results / "runs").iterdir()):
        metrics = run_dir / "metrics.json"
        out[run_dir.name] = {"record": json.loads((run_dir / "run.json").read_text()),
                             "metrics": json.loads(metrics.read_text()) if metrics.exists() else None}
    return out
