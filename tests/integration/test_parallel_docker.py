"""Data-parallel runs in real containers: two workers in one network-less container per run
(PyTorch through torchrun + DDP, TensorFlow's MultiWorkerMirroredStrategy, jax.distributed),
each worker pinned to its own core, against the 1-worker run of the same configuration; a
worker killed from outside mid-run; the refusals that come before anything runs. The
correctness check (2 workers' losses equal 1 worker's) is `dlbench check`'s data-parallel
part: tests/integration/test_equivalence_docker.py runs it for every such row."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.paths import REPO_ROOT

from .helpers import DLBENCH, dlbench, only_results_dir, runs, write_suite

pytestmark = [pytest.mark.docker, pytest.mark.framework]

FRAMEWORKS = ["pytorch/eager", "tensorflow/eager", "jax/flax"]


@pytest.fixture()
def env(base_image, mnist_test_dir, tmp_path):
    data = tmp_path / "datasets"
    shutil.copytree(mnist_test_dir, data / "mnist")
    return {"DLBENCH_BASE_IMAGE": base_image, "DLBENCH_DATA_DIR": str(data),
            "DLBENCH_RESULTS": str(tmp_path / "results")}


def test_two_workers_per_framework_in_one_container_against_one_worker(env, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs 2 CPUs (one per worker); CI machines have them")
    path = write_suite(tmp_path, f"""\
        name: scaling
        defaults: {{dataset: mnist, train_split: test, train_limit: 2048, test_limit: 512,
                    warmup_steps: 2, batch_size: 64}}
        matrix:
          framework: {json.dumps(FRAMEWORKS)}
          workers: [1, 2]
        """)
    proc = dlbench("run", path, "--backend", "docker", env=env, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    found = runs(results)
    assert len(found) == 6 and all(r["record"]["outcome"] == "ok" for r in found.values()), \
        {k: (r["record"]["outcome"], r["record"].get("message")) for k, r in found.items()}
    for run_id, run in found.items():
        m, p = run["metrics"], run["metrics"]["parallel"]
        if "-w1" in run_id:
            assert p["world_size"] == 1 and p["mechanism"] == "one process"
            continue
        assert p["world_size"] == 2 and p["global_batch_size"] == 128 and p["scaling"] == "weak"
        assert p["launcher"] == ("torchrun" if m["framework"]["name"] == "pytorch" else "dlbench")
        assert [r["status"] for r in p["ranks"]] == ["ok", "ok"]
        cpus = [set(r["cpus"]) for r in p["ranks"]]
        assert all(len(c) == 1 for c in cpus) and not cpus[0] & cpus[1]  # a core each
        assert m["dataset"]["train_samples"] == 2048 and p["dropped_train_samples"] == 0
        # the global rate: every rank's images over the slowest rank's time
        slowest = max(r["train_total_s"] for r in p["ranks"])
        assert m["timing"]["images_per_s"] == pytest.approx(2048 / slowest)
        assert m["options"]["parallel"], m["options"]  # what the framework file set up
        assert m["schema_version"] == 2
    summary = json.loads((results / "summary.json").read_text())
    rows = {row["framework"]: row for row in summary["scaling"]}
    assert set(rows) == {"pytorch", "tensorflow", "jax"}
    for row in rows.values():
        assert row["workers"] == 2 and 0 < row["efficiency"] < 2 and row["reason"] is None
    report = (results / "report.html").read_text()
    assert "Scaling" in report and "figure-scaling" in report


def _worker_pid(client, results: Path, rank: int) -> int | None:
    """The host PID of the worker with this RANK in the run's container (root reads environ)."""
    for container in client.containers.list(filters={"label": f"org.dlbench.results={results}"}):
        top = container.top(ps_args="-eo pid,args")
        pid_at = top["Titles"].index("PID")
        for process in top["Processes"]:
            pid = int(process[pid_at])
            if "workloads worker" not in " ".join(process):
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
    return None


@pytest.mark.parametrize("framework", ["pytorch/eager", "jax/flax", "mxnet/gluon"])
def test_a_worker_killed_mid_run_fails_the_run_naming_its_rank_and_stops_the_others(
        framework, env, docker_client, tmp_path):
    path = write_suite(tmp_path, f"""\
        name: kill-a-rank
        defaults: {{synthetic: true, train_limit: 8192, test_limit: 256, epochs: 50, warmup_steps: 1,
                    timeout: 600}}
        runs: [{{framework: {framework.split('/')[0]}, api: {framework.split('/')[1]}, parallel: {{workers: 2}}}}]
        """)
    proc = subprocess.Popen([*DLBENCH, "run", str(path), "--backend", "docker"], cwd=REPO_ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        root = tmp_path / "results"
        deadline = time.monotonic() + 900
        pid = None
        while time.monotonic() < deadline and pid is None:
            logs = list(root.glob("*/runs/*/output.log"))
            if logs and '"timed"' in logs[0].read_text(errors="replace"):
                pid = _worker_pid(docker_client, logs[0].parents[2], rank=1)
            time.sleep(0.5)
        assert pid is not None, "rank 1 never started its timed epochs"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        out, _ = proc.communicate(timeout=300)
        ended_s = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    results = only_results_dir(root)
    (run,) = runs(results).values()
    assert run["record"]["outcome"] == "failed", out[-3000:]
    m = run["metrics"]
    assert m["parallel"]["failed_rank"] == 1 and m["error"].startswith("rank 1"), m["error"]
    assert "died without a result" in m["error"]
    if framework != "pytorch/eager":  # our launcher saw each process end (torchrun's own does not say)
        assert "killed by SIGKILL" in m["error"]
    statuses = [r["status"] for r in m["parallel"]["ranks"]]
    assert statuses[1] == "missing" and statuses[0] in ("stopped", "failed"), statuses
    assert ended_s < 120, f"the run took {ended_s:.0f} s to end after the kill"
    assert not docker_client.containers.list(all=True, filters={"label": f"org.dlbench.results={results}"})


def test_workers_beyond_the_cores_and_nodes_off_slurm_are_refused_before_anything_runs(env, tmp_path):
    cores = len(os.sched_getaffinity(0))
    path = write_suite(tmp_path, f"name: too-many\nruns: [{{framework: pytorch, api: eager, synthetic: true, "
                                 f"parallel: {{workers: {cores + 1}}}}}]\n")
    proc = dlbench("run", path, "--backend", "docker", env=env)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert f"parallel.workers: {cores + 1} workers per node but {cores} CPU(s)" in line
    path = write_suite(tmp_path, "name: two-nodes\nruns: [{framework: pytorch, api: eager, synthetic: true, "
                                 "parallel: {workers: 1, nodes: 2}}]\n", name="nodes.yaml")
    proc = dlbench("run", path, "--backend", "docker", env=env)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert "parallel.nodes is 2; the docker backend runs on this host only" in line
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
