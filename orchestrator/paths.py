"""Where things live: the repository (Dockerfiles, contract, workloads, suites) and the host cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO_ROOT / "docker"
WORKLOADS_DIR = REPO_ROOT / "workloads"
CONTRACT_DIR = REPO_ROOT / "contract"            # copied into the images beside workloads/
SCHEMA_DIR = CONTRACT_DIR / "schemas"           # the two contracts, shared with workloads
ORCHESTRATOR_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def cache_dir() -> Path:
    """Host cache for datasets, base-image tarballs and local-backend venvs."""
    root = os.environ.get("DLBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dlbench")
    return Path(root)


def results_root() -> Path:
    return Path(os.environ.get("DLBENCH_RESULTS") or REPO_ROOT / "results")
