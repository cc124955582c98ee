"""A batch-size sweep in real containers: 2 frameworks x 2 batch sizes x 2 repeats on real
Fashion-MNIST (a small slice, for CI time), plus an oversized batch under a small memory
limit. Checks the statistics in summary.json, the resource monitor and the `oom` finding."""
from __future__ import annotations

import json

import pytest

from orchestrator import datasets
from orchestrator.results.directory import schema_error

from .helpers import dlbench, only_results_dir, runs, write_suite

pytestmark = pytest.mark.docker

SWEEP = """
    name: sweep-ci
    defaults: {train_limit: 512, test_limit: 500, repeats: 2, monitor_interval: 0.5,
               resources: {memory: 3g}}
    statistics: {cv_threshold: 0.25}
    matrix:
      framework: [pytorch/eager, tensorflow/keras]
      batch_size: [32, 128]
      include:   # a new combination: 4096 images in one batch under 800 MB cannot fit
        - {framework: pytorch/eager, batch_size: 4096, train_limit: 4096, repeats: 1,
           resources: {memory: 800m}}
"""
EXPECTED_IDS = [f"{i:02d}-{fw}-bs{bs}-r{r}" for i, (fw, bs) in enumerate(
    [("pytorch-eager", 32), ("pytorch-eager", 128), ("tensorflow-keras", 32),
     ("tensorflow-keras", 128)], 1) for r in (1, 2)] + ["05-pytorch-eager-bs4096"]


@pytest.fixture(scope="module")
def sweep(docker_client, base_image, tmp_path_factory):
    if datasets.locate("fashion-mnist", ("train", "test")) is None:
        pytest.fail("Fashion-MNIST missing: apt-get install dataset-fashion-mnist (CI does)")
    tmp = tmp_path_factory.mktemp("sweep")
    proc = dlbench("run", write_suite(tmp, SWEEP), "--backend", "docker",
                   env={"DLBENCH_BASE_IMAGE": base_image, "DLBENCH_RESULTS": str(tmp / "results")})
    results = only_results_dir(tmp / "results")
    return proc, results, runs(results)


def test_sweep_runs_every_combination_and_the_oom_is_a_finding(sweep, docker_client):
    proc, results, found = sweep
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # one oom, not a crash
    assert "Traceback" not in proc.stderr
    assert list(found) == EXPECTED_IDS
    for run_id, run in found.items():
        expected = "oom" if run_id.endswith("bs4096") else "ok"
        assert run["record"]["outcome"] == expected, (run_id, run["record"])
        assert run["record"]["batch_size"] == int(run_id.split("-bs")[1].split("-")[0])
        assert schema_error("run", run["record"]) is None
    oom = found["05-pytorch-eager-bs4096"]["record"]
    assert oom["resources"]["memory"] == "800m"
    summary = json.loads((results / "summary.json").read_text())
    (oom_entry,) = [r for r in summary["runs"] if r["outcome"] == "oom"]
    assert oom_entry["batch_size"] == 4096
    html = (results / "report.html").read_text()
    assert "Memory overflows" in html and "4,096" in html and "Statistics over repeats" in html
    assert not docker_client.containers.list(all=True, filters={"label": "org.dlbench.run-id"})


def test_summary_carries_medians_confidence_intervals_and_comparisons(sweep):
    _, results, found = sweep
    summary = json.loads((results / "summary.json").read_text())
    assert len(summary["runs"]) == len(EXPECTED_IDS)  # per-run entries kept
    st = summary["statistics"]
    assert st["cv_threshold"] == 0.25
    groups = {g["group"]: g for g in st["groups"]}
    assert set(groups) == {run_id.rsplit("-r", 1)[0] for run_id in EXPECTED_IDS}
    for gid, group in groups.items():
        if gid.endswith("bs4096"):
            assert group["outcomes"] == ["oom"] and group["metrics"]["images_per_s"]["n"] == 0
            continue
        ips = group["metrics"]["images_per_s"]
        assert ips["n"] == 2 and ips["ci95"][0] <= ips["mean"] <= ips["ci95"][1]
        assert ips["median"] == pytest.approx(sum(ips["values"]) / 2)
        raw = [found[f"{gid}-r{r}"]["metrics"]["timing"]["images_per_s"] for r in (1, 2)]
        assert ips["values"] == raw  # derived from the raw per-repeat values, which stay
        assert group["timing_median"]["startup_s"] > 0
    pairs = {(c["a"], c["b"]) for c in st["comparisons"]}
    assert pairs == {("01-pytorch-eager-bs32", "03-tensorflow-keras-bs32"),
                     ("02-pytorch-eager-bs128", "04-tensorflow-keras-bs128")}
    for comparison in st["comparisons"]:
        assert comparison["metrics"]["images_per_s"]["significant"] in (True, False)


def test_monitor_series_and_summaries(sweep):
    _, results, found = sweep
    for run_id, run in found.items():
        lines = [json.loads(line) for line in
                 (results / "runs" / run_id / "monitor.jsonl").read_text().splitlines()]
        assert lines and all("t" in line and "memory_mb" in line for line in lines)
        assert all("gpus" not in line for line in lines)   # no GPU here: recorded as none
        mon = run["record"]["monitor"]
        assert mon["samples"] == len(lines) and mon["interval_s"] == 0.5 and mon["gpus"] == []
        assert mon["memory_mb"]["peak"] > 50, (run_id, mon)  # a framework was loaded
        if run["record"]["outcome"] == "ok":
            assert mon["cpu_percent"]["peak"] > 10, (run_id, mon)
            assert mon["memory_mb"]["peak"] < 3 * 1024
    summary = json.loads((results / "summary.json").read_text())
    assert all(entry["monitor"]["samples"] > 0 for entry in summary["runs"])
