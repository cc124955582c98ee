"""`make bench` and friends against a real Docker engine, with real containers and data."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from orchestrator import datasets
from orchestrator.execution.backends.docker import NO_GPU_MESSAGE, DockerBackend
from orchestrator.paths import REPO_ROOT
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import ResultsDir, schema_error

from .helpers import dlbench, only_results_dir, runs, write_suite

pytestmark = pytest.mark.docker

PAPER_PARAMETERS = 1_669_002


@pytest.fixture()
def env(base_image, tmp_path):
    return {"DLBENCH_BASE_IMAGE": base_image, "DLBENCH_RESULTS": str(tmp_path / "results")}


def leftover_containers(client):
    return client.containers.list(all=True, filters={"label": "org.dlbench.run-id"})


def test_make_bench_trains_both_frameworks_in_containers(docker_client, env, tmp_path):
    if datasets.locate("fashion-mnist", ("train", "test")) is None:
        pytest.fail("Fashion-MNIST missing: apt-get install dataset-fashion-mnist (CI does)")
    # --no-print-directory: under `make test` the nested make would add "Leaving directory".
    proc = subprocess.run(["make", "--no-print-directory", "bench", "BACKEND=docker"],
                          cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = only_results_dir(tmp_path / "results")
    assert results.name.endswith("-quick")
    assert f"Report: {results / 'report.html'}" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"Bundle verified: {results}"
    found = runs(results)
    assert list(found) == ["01-pytorch-eager", "02-tensorflow-keras"]
    images = json.loads((results / "images.json").read_text())
    for run_id, run in found.items():
        record, metrics = run["record"], run["metrics"]
        assert record["outcome"] == "ok" and record["backend"] == "docker", record
        assert record["environment"]["kind"] == "image" and record["environment"]["id"].startswith("sha256:")
        assert schema_error("metrics", metrics) is None
        assert metrics["model"]["parameters"] == PAPER_PARAMETERS
        assert metrics["dataset"]["train_samples"] == 60_000 and metrics["dataset"]["test_samples"] == 10_000
        assert metrics["test"]["accuracy"] > 0.75, metrics["test"]  # one epoch of Fashion-MNIST
        assert metrics["timing"]["images_per_s"] > 100
        assert (results / "runs" / run_id / "output.log").stat().st_size > 0
    assert images["pytorch/cpu"]["tag"] == "dlbench/pytorch:2.13.0-cpu"
    assert images["tensorflow/cpu"]["tag"] == "dlbench/tensorflow:2.21.0-cpu"
    html = (results / "report.html").read_text()
    for text in ("pytorch / eager", "tensorflow / keras", "1,669,002",
                 images["pytorch/cpu"]["id"].split(":")[1][:12], "Throughput (img/s)"):
        assert text in html
    for name in ("suite.yaml", "plan.json", "system.json", "summary.json"):
        assert (results / name).is_file()
    assert not leftover_containers(docker_client)


def test_mnist_test_split_run_and_a_timeout(docker_client, env, tmp_path, mnist_cache):
    suite = write_suite(tmp_path, """
        name: split
        defaults: {dataset: mnist, train_split: test, test_limit: 2000, epochs: 2,
                   resources: {cpus: 2, memory: 3g}}
        runs:
          - {framework: pytorch, api: eager}
          - {framework: pytorch, api: eager, timeout: 2}
    """)
    proc = dlbench("run", suite, "--backend", "docker", env={**env, "DLBENCH_CACHE": str(mnist_cache)})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one run did not finish
    results = only_results_dir(tmp_path / "results")
    found = runs(results)
    ok, slow = found["01-pytorch-eager"], found["02-pytorch-eager"]
    assert ok["record"]["outcome"] == "ok"
    assert ok["metrics"]["dataset"] == {"name": "mnist", "train_split": "test", "synthetic": False,
                                        "train_samples": 10_000, "test_samples": 2_000, "layout": "NCHW"}
    assert [e["epoch"] for e in ok["metrics"]["epochs"]] == [1, 2]
    assert ok["metrics"]["epochs"][1]["test_accuracy"] > 0.9  # MNIST digits learn fast
    assert ok["record"]["resources"] == {"cpus": 2, "memory": "3g"}
    assert slow["record"]["outcome"] == "timeout"
    html = (results / "report.html").read_text()
    assert "Runs that did not finish" in html and "timeout" in html
    assert "trained on the test split" in html
    assert not leftover_containers(docker_client)


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory, mnist_test_dir):
    """The real MNIST test split imported into a private cache, as a user would."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DLBENCH_CACHE")
    os.environ["DLBENCH_CACHE"] = str(cache)
    try:
        datasets.import_dir("mnist", mnist_test_dir)
    finally:
        if old is None:
            del os.environ["DLBENCH_CACHE"]
        else:
            os.environ["DLBENCH_CACHE"] = old
    return cache


def test_containers_are_locked_down(docker_client, base_image, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_BASE_IMAGE", base_image)
    suite = load_suite(write_suite(tmp_path, """
        name: lock
        defaults: {resources: {cpus: 1.5, memory: 2g, cpuset: "0-1"}}
        runs: [{framework: pytorch, api: eager}]
    """))
    run = suite.runs[0]
    backend = DockerBackend(docker_client)
    environment = backend.prepare("pytorch", "cpu", progress=lambda line: None)
    run_dir = ResultsDir.create(tmp_path / "results", "lock").run_dir(run.run_id)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = backend.container_config(run, run_dir, str(data_dir), environment)
    container = docker_client.containers.create(**config)
    try:
        attrs = docker_client.api.inspect_container(container.id)
    finally:
        container.remove(force=True)
    host, cfg = attrs["HostConfig"], attrs["Config"]
    assert cfg["User"] not in ("", "0", "root", "0:0")
    assert cfg["NetworkDisabled"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["Privileged"] is False
    assert host["NanoCpus"] == 1_500_000_000 and host["CpusetCpus"] == "0-1"
    assert host["Memory"] == 2 * 2**30 and host["MemorySwap"] == 2 * 2**30
    binds = {b.split(":")[1]: b for b in host["Binds"]}
    assert binds["/data/fashion-mnist"].endswith(":ro")
    assert binds[f"/results/{run.run_id}"].endswith(":rw")
    assert binds[f"/results/{run.run_id}"].startswith(str(run_dir.path) + ":")
    assert len(binds) == 2 and not any("docker.sock" in b for b in host["Binds"])


def test_gpu_suite_without_nvidia_toolkit_fails_in_one_sentence(docker_client, env, tmp_path):
    if "nvidia" in docker_client.info().get("Runtimes", {}):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI's engine has the NVIDIA runtime: the no-GPU path cannot be shown there")
        pytest.skip("this engine has the NVIDIA runtime: the no-GPU path cannot be shown here")
    proc = dlbench("run", REPO_ROOT / "suites" / "quick-gpu.yaml", "--backend", "docker", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"dlbench: error: {NO_GPU_MESSAGE}"
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
    assert not docker_client.containers.list(all=True, filters={"label": "org.dlbench.probe"})
