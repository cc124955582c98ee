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


def test_two_workers_run_in_the_local_virtualenv_each_on_its_own_cores(tmp_path):
    """The local backend runs the same launcher as a container: torchrun starts two DDP
    workers in the framework's virtualenv, each pinned to its own cores and threads."""
    suite = write_suite(tmp_path, """
        name: local-parallel
        defaults: {synthetic: true, train_limit: 2048, test_limit: 512, batch_size: 64}
        runs:
          - {framework: pytorch, api: eager, parallel: {workers: 2}}
          - {framework: pytorch, api: eager, parallel: {workers: 1}}
    """)
    proc = dlbench("run", suite, "--backend", "local", env={"DLBENCH_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = only_results_dir(tmp_path / "results")
    two, one = (r["metrics"] for r in runs(results).values())
    p = two["parallel"]
    assert p["launcher"] == "torchrun" and p["world_size"] == 2 and one["parallel"]["world_size"] == 1
    cpus = [set(r["cpus"]) for r in p["ranks"]]
    assert all(cpus) and not cpus[0] & cpus[1]
    assert two["options"]["intra_op_threads"] == len(cpus[0])  # a worker's threads: its own cores
    assert two["options"]["parallel"]["backend"] == "gloo"
    assert 0 <= p["communication"]["time_s"] < two["timing"]["train_total_s"]
