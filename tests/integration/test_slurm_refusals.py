"""What `dlbench run --backend slurm` refuses in one line, before a job is submitted or a
results directory made, against the real test cluster (tests/slurm/cluster-up.sh): its
partitions `debug` (n1, n2: this host), `restricted` (lets accounts lab and ci in) and
`remote` (n3, a node of another machine: it cannot share this host's local disk).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import dlbench, write_suite

TINY = ("synthetic: true, train_limit: 64, test_limit: 64, batch_size: 32, "
        "resources: {cpus: 1, memory: 1g}")


def refused(tmp_path: Path, slurm: str, env: dict | None = None, device: str = "cpu",
            framework: str = "chainer", extra: str = "") -> str:
    path = write_suite(tmp_path, f"name: refused\ndefaults: {{{TINY}, device: {device}}}\n"
                                 f"runs:\n  - {{framework: {framework}, api: eager, seed: 1{extra}}}\n"
                                 f"slurm: {{{slurm}}}\n")
    proc = dlbench("run", path, "--backend", "slurm",
                   env={"DLBENCH_RESULTS": str(tmp_path / "results"), **(env or {})}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir()), \
        "nothing may be made before the refusal"
    return lines[0]


def no_new_jobs(before: str) -> None:
    after = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                           text=True, timeout=60).stdout
    assert set(after.split()) <= set(before.split()), "a job was submitted"


@pytest.fixture()
def queue_before(slurm_conf):
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                          text=True, timeout=60).stdout


def test_unknown_partition(tmp_path, queue_before):
    line = refused(tmp_path, "partition: gpu-big")
    assert "slurm.partition: unknown partition 'gpu-big'" in line and "debug" in line
    no_new_jobs(queue_before)


def test_unknown_account_of_a_partition_that_names_its_accounts(tmp_path, queue_before):
    line = refused(tmp_path, "partition: restricted, account: physics")
    assert "slurm.account: unknown account 'physics'" in line and "lab" in line
    no_new_jobs(queue_before)


def test_gpus_no_node_has(tmp_path, queue_before):
    line = refused(tmp_path, "partition: debug, gpus_per_run: 2", device="gpu", framework="pytorch")
    assert "slurm.gpus_per_run" in line and "no node it may use has more than 0" in line
    no_new_jobs(queue_before)


def test_nodelist_outside_the_partition(tmp_path, queue_before):
    line = refused(tmp_path, "partition: debug, nodelist: 'n[2-3]'")
    assert "slurm.nodelist: n3 is not a node of partition debug" in line


def test_results_not_on_a_filesystem_the_nodes_share(tmp_path, queue_before):
    line = refused(tmp_path, "partition: remote, time: 10")
    assert "do not share with this host" in line and "n3" in line and "shared_filesystem" in line
    no_new_jobs(queue_before)


def test_time_beyond_the_partition_limit(tmp_path, queue_before):
    line = refused(tmp_path, "partition: debug, time: 90")
    assert "slurm.time: 90 min per run is more than partition debug's MaxTime (00:30:00)" in line


def test_a_multi_node_run_in_containers_and_more_nodes_than_the_partition_has(tmp_path, queue_before):
    line = refused(tmp_path, "partition: debug", framework="pytorch", extra=", parallel: {nodes: 2}")
    assert "slurm.runtime: run 01-pytorch-eager spans 2 nodes; multi-node runs need runtime: local" in line
    line = refused(tmp_path, "partition: debug, runtime: local", framework="pytorch",
                   extra=", parallel: {nodes: 3}")
    assert "sbatch" in line and "node" in line.lower(), line
    no_new_jobs(queue_before)


def test_no_slurm_commands_on_the_path(tmp_path, slurm_conf):
    empty = tmp_path / "bin"
    empty.mkdir()
    line = refused(tmp_path, "partition: debug", env={"PATH": str(empty)})
    assert "sbatch, squeue, scontrol, scancel, sinfo are not on the PATH" in line


def test_controller_unreachable(tmp_path, slurm_conf):
    conf = tmp_path / "slurm.conf"  # the same cluster, with its controller on a port nobody serves
    conf.write_text(Path(slurm_conf).read_text() + "SlurmctldPort=6899\n")
    line = refused(tmp_path, "partition: debug", env={"SLURM_CONF": str(conf)})
    assert line.startswith("dlbench: error: the Slurm controller does not answer") and "SLURM_CONF" in line


def test_munge_not_running(tmp_path, slurm_conf):
    """munged stopped for real, then started again (the cluster needs it for every request)."""
    if os.geteuid() != 0 or shutil.which("munged") is None:
        reason = "stopping and starting munged needs root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI runs as root")
        pytest.skip(reason)
    subprocess.run(["pkill", "-x", "munged"], timeout=60)
    try:
        for _ in range(50):
            if subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode != 0:
                break
        line = refused(tmp_path, "partition: debug")
        assert line.startswith("dlbench: error: munge is not running on this host") and "munged" in line
    finally:
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, timeout=60)
    assert subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0
    for _ in range(60):  # the daemons talk again before the next test submits anything
        nodes = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%t"], capture_output=True,
                               text=True, timeout=60).stdout.split()
        if nodes and all(state == "idle" for state in nodes):
            break
        time.sleep(1)


def test_detach_on_a_backend_that_runs_here(tmp_path):
    path = write_suite(tmp_path, f"name: refused\ndefaults: {{{TINY}}}\nruns:\n  - {{framework: chainer, api: eager, seed: 1}}\n")
    proc = dlbench("run", path, "--backend", "local", "--detach",
                   env={"DLBENCH_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 2 and "--detach applies to the slurm backend only" in proc.stderr


@pytest.mark.parametrize("backend, address, problem", [
    ("local", "registry.lab:5000", "--registry applies to the slurm backend only"),
    ("slurm", "https://registry.lab", "--registry: 'https://registry.lab' is not HOST[:PORT][/PREFIX]")])
def test_registry_only_where_it_means_something(tmp_path, slurm_conf, backend, address, problem):
    path = write_suite(tmp_path, f"name: refused\ndefaults: {{{TINY}}}\n"
                                 "runs:\n  - {framework: chainer, api: eager, seed: 1}\n")
    proc = dlbench("run", path, "--backend", backend, "--registry", address,
                   env={"DLBENCH_RESULTS": str(tmp_path / "results")})
    assert proc.returncode == 2 and problem in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_a_submission_slurm_never_saw_is_dropped_so_its_runs_run_again(tmp_path, slurm_conf):
    """jobs.json names a submission whose sbatch never happened (dlbench stopped before it):
    no job of that name exists, so the submission is forgotten and its runs have no job."""
    import json

    from orchestrator.execution.backends.slurm import SlurmBackend

    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.json").write_text(json.dumps(
        {"arrays": {"t0": {"name": "dlbench-never-submitted-t0", "job_id": None, "runs": ["01-x"],
                           "options": [], "submitted_at": "2026-12-01T00:00:00Z"}}, "runs": {}}))
    assert SlurmBackend(None).recorded_jobs(tmp_path) == set()
    assert json.loads((tmp_path / "slurm" / "jobs.json").read_text())["arrays"] == {}
