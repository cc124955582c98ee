"""The local backend (no Docker): real virtualenvs from the lock files, real training."""
from __future__ import annotations

import hashlib

import pytest

from orchestrator import images
from orchestrator.paths import REPO_ROOT

from .helpers import dlbench, only_results_dir, runs, write_suite

pytestmark = pytest.mark.framework

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_auto_without_docker_says_so_and_trains_both_frameworks_locally(tmp_path):
    suite = write_suite(tmp_path, """
        name: local
        defaults: {dataset: fashion-mnist, train_limit: 2048, test_limit: 1000}
        runs:
          - {framework: pytorch, api: eager}
          - {framework: tensorflow, api: keras}
    """)
    proc = dlbench("run", suite, "--backend", "auto",
                   env={**NO_ENGINE, "DLBENCH_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    notice = [line for line in proc.stdout.splitlines() if line.startswith("No Docker engine reachable")]
    assert len(notice) == 1 and "local backend" in notice[0]
    found = runs(only_results_dir(tmp_path / "results"))
    for run, framework in zip(found.values(), ("pytorch", "tensorflow")):
        record, metrics = run["record"], run["metrics"]
        assert record["outcome"] == "ok" and record["backend"] == "local", record
        _, flavour = images.get_spec(framework, "cpu")
        assert record["environment"]["lock_sha256"] == hashlib.sha256(flavour.lock.read_bytes()).hexdigest()
        assert metrics["framework"]["name"] == framework
        assert metrics["model"]["parameters"] == 1_669_002
        assert metrics["dataset"]["train_samples"] == 2048
        assert metrics["test"]["accuracy"] > 0.5


def test_backend_docker_without_engine_is_one_line(tmp_path):
    proc = dlbench("run", REPO_ROOT / "suites" / "quick.yaml", "--backend", "docker",
                   env={**NO_ENGINE, "DLBENCH_RESULTS": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("dlbench: error: BACKEND=docker but no Docker engine is reachable")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bench_gpu_without_a_driver_is_one_sentence(tmp_path, no_nvidia_driver):
    proc = dlbench("run", REPO_ROOT / "suites" / "quick-gpu.yaml", "--backend", "local",
                   env={"DLBENCH_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 2
    assert proc.stderr.startswith("dlbench: error: GPU requested but no NVIDIA driver answers")
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()
