"""The slurm backend against a real two-node Slurm cluster (Debian's slurmctld, two slurmd
and munge, started by tests/slurm/cluster-up.sh; .ci/run starts it in CI): jobs spread
over both nodes, the scheduler's outcomes (timeout, node failure, cancel), the node-side
clean-up of containers, detach / status / resume, Ctrl-C. Every run is a real chainer
container started by a real job on its node; nothing here is a fake.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.paths import REPO_ROOT
from tests.integration.helpers import DLBENCH, dlbench, only_results_dir, runs, write_suite

# Chainer: the smallest image, a run of a few seconds on real MNIST (mounted read-only).
TINY = ("dataset: mnist, train_split: test, train_limit: 256, "
        "test_limit: 256, warmup_steps: 1, resources: {cpus: 1, memory: 1g}")
# Some tens of seconds of training: long enough to cancel it, or fail its node, mid-run.
MEDIUM = "epochs: 12, train_limit: 1024"
LONG = "epochs: 500, train_limit: 2048"   # minutes: only a limit or a cancel ends it


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60).stdout


@pytest.fixture()
def cluster(slurm_conf, docker_client, base_image, mnist_test_dir, tmp_path):
    """Both nodes idle, the environment a user's shell would have, and afterwards: no job
    and no container of this test left behind."""
    for _ in range(60):
        scontrol("update", "nodename=n1,n2", "state=resume")
        states = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t"], capture_output=True,
                                text=True, timeout=60).stdout.split("\n")
        if sum(" idle" in line for line in states) == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the test cluster's nodes are not idle: {states}")
    data = tmp_path / "datasets"
    shutil.copytree(mnist_test_dir, data / "mnist")
    env = {"SLURM_CONF": slurm_conf, "DLBENCH_BASE_IMAGE": base_image, "DLBENCH_DATA_DIR": str(data),
           "DLBENCH_RESULTS": str(tmp_path / "results")}
    yield env
    root = tmp_path / "results"
    if root.exists():
        for jobs in root.glob("*/slurm/jobs.json"):
            arrays = [a["job_id"] for a in json.loads(jobs.read_text())["arrays"].values() if a["job_id"]]
            subprocess.run(["scancel", *arrays], capture_output=True, timeout=60)
    for container in our_containers(docker_client, root):
        container.remove(force=True)


def our_containers(client, root: Path) -> list:
    return [c for c in client.containers.list(all=True)
            if c.labels.get("org.dlbench.results", "").startswith(str(root))]


def suite(tmp_path: Path, *runs_: str, slurm: str = "", name: str = "on-slurm") -> Path:
    lines = "\n".join(f"  - {{framework: chainer, api: eager, seed: {seed}{', ' + extra if extra else ''}}}" for seed, extra in enumerate(runs_))
    return write_suite(tmp_path, f"name: {name}\ndefaults: {{{TINY}}}\nruns:\n{lines}\n"
                                 f"slurm: {{partition: debug, poll_seconds: 2{', ' + slurm if slurm else ''}}}\n")


def node_record(results: Path, run_id: str) -> dict:
    try:
        return json.loads((results / "runs" / run_id / "node.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(what: str, condition, seconds: float = 180, every: float = 1.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"not within {seconds:.0f} s: {what}")


def jobs_of(results: Path) -> dict[str, str]:
    return {run_id: job["job_id"] for run_id, job in
            json.loads((results / "slurm" / "jobs.json").read_text())["runs"].items()}


def job_state(job_id: str) -> str:
    line = scontrol("show", "job", "-o", job_id)
    return next((f.split("=", 1)[1] for f in line.split() if f.startswith("JobState=")), "")


def test_four_runs_spread_over_both_nodes_and_make_one_verified_bundle(cluster, docker_client, tmp_path):
    path = suite(tmp_path, *["epochs: 4, train_limit: 1024"] * 4)  # seconds each: the sampler samples
    started = time.monotonic()
    proc = dlbench("run", path, "--backend", "slurm", env=cluster, timeout=900)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    recorded = runs(results)
    assert len(recorded) == 4 and all(r["record"]["outcome"] == "ok" for r in recorded.values())
    slurm = [r["record"]["slurm"] for r in recorded.values()]
    assert {s["node"] for s in slurm} == {"n1", "n2"}, slurm  # one CPU each: two at a time, both used
    assert all(s["state"] == "COMPLETED" and s["exit_code"] == "0:0" and s["partition"] == "debug"
               for s in slurm)
    assert all(s["max_rss"] for s in slurm)  # the job's own peak RSS, as Slurm's MaxRSS counts it
    for run_id, run in recorded.items():
        record = run["record"]
        assert record["backend"] == "slurm" and record["environment"]["id"].startswith("sha256:")
        assert record["data"]["source"] == "DLBENCH_DATA_DIR"  # real MNIST, mounted on the node
        assert (results / "runs" / run_id / "monitor.jsonl").stat().st_size > 0  # the node's sampler
        assert node_record(results, run_id)["image"]["id"] == record["environment"]["id"]
        assert 0 < record["wall_s"] < wall
    assert "Bundle verified" in proc.stdout
    assert dlbench("verify", results, env=cluster).returncode == 0
    status = dlbench("status", results, env=cluster)
    assert status.returncode == 0 and status.stdout.count("done: ok") == 4, status.stdout
    assert not our_containers(docker_client, tmp_path / "results")
    print(f"4 runs over 2 Slurm nodes: {wall:.1f} s wall")


def test_time_limit_and_memory_limit_are_timeout_and_oom_and_stop_their_containers(
        cluster, docker_client, tmp_path):
    # time: 1 minute per job; the first run trains for far longer, the second cannot even
    # import its framework in 40 MB (the container's limit, which Slurm's --mem matches)
    path = suite(tmp_path, LONG, "resources: {cpus: 1, memory: 40m}", slurm="time: 1")
    proc = dlbench("run", path, "--backend", "slurm", env=cluster, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    recorded = {run_id: r["record"] for run_id, r in runs(results).items()}
    long_run, small_run = sorted(recorded)
    assert recorded[long_run]["outcome"] == "timeout", recorded[long_run]
    assert recorded[long_run]["slurm"]["state"] == "TIMEOUT"
    assert recorded[long_run]["slurm"]["output_tail"]  # the run's last lines, for the report
    assert recorded[small_run]["outcome"] == "oom", recorded[small_run]
    assert node_record(results, long_run)["terminated"] is True  # the node caught SIGTERM
    assert not our_containers(docker_client, tmp_path / "results")  # stopped, not left running
    report = (results / "report.html").read_text()
    assert "TIMEOUT" in report and "reached its Slurm time limit" in report


def test_detach_status_scancel_node_down_then_resume(cluster, docker_client, tmp_path):
    # three runs, two at a time: the first is cancelled (scancel) and the second's node is
    # set down while they run; the third runs once a node is free
    path = suite(tmp_path, LONG, MEDIUM, "", slurm="max_jobs: 2")
    proc = dlbench("run", path, "--backend", "slurm", "--detach", env=cluster, timeout=600)
    assert proc.returncode == 0 and "Detached" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Report:" not in proc.stdout and "Bundle verified" not in proc.stdout
    results = only_results_dir(tmp_path / "results")
    first, second, third = sorted(jobs_of(results))
    wait_for("two runs started", lambda: all(node_record(results, r).get("phase") == "running"
                                             for r in (first, second)))
    status = dlbench("status", results, env=cluster)
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout and "queued" in status.stdout  # the third waits its turn
    assert {"n1", "n2"} <= set(status.stdout.split()), status.stdout
    jobs = jobs_of(results)
    node_of_second = node_record(results, second)["node"]
    cancelled = subprocess.run(["scancel", jobs[first]], capture_output=True, text=True, timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    scontrol("update", f"nodename={node_of_second}", "state=down", "reason=dlbench-test")
    try:
        # the node program stops the container at SIGTERM: none of the two is left running
        wait_for("the cancelled and the failed run's containers removed",
                 lambda: not [c for c in our_containers(docker_client, tmp_path / "results")
                              if c.labels.get("org.dlbench.run-id") in (first, second)], seconds=90)
        wait_for("all three jobs ended", lambda: all(
            job_state(jobs[r]) in ("CANCELLED", "NODE_FAIL", "COMPLETED") for r in (first, second, third)),
            seconds=300, every=2)
        status = dlbench("status", results, env=cluster)
        assert "ended (CANCELLED), not gathered" in status.stdout, status.stdout
        assert "ended (NODE_FAIL), not gathered" in status.stdout
        assert f"dlbench run --resume {results}" in status.stdout
    finally:
        scontrol("update", f"nodename={node_of_second}", "state=resume")
    # one resume at a time: a second dlbench, while the first gathers, submits nothing
    errors = tmp_path / "resume.err"
    first_resume = subprocess.Popen([*DLBENCH, "run", "--resume", str(results)], cwd=REPO_ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=errors.open("w"), env={**os.environ, **cluster})
    assert first_resume.stdout is not None
    lines = [first_resume.stdout.readline()]
    while not lines[-1].startswith("Resuming") and lines[-1]:
        lines.append(first_resume.stdout.readline())
    intruder = dlbench("run", "--resume", results, env=cluster, timeout=300)
    assert intruder.returncode == 2 and "is being written by" in intruder.stderr, intruder.stderr
    # read on through the same buffered stream (communicate() would skip what it holds already)
    out = "".join(lines) + first_resume.stdout.read()
    first_resume.wait(timeout=900)
    err = errors.read_text()
    assert "re-attaching to the jobs of 3 run(s)" in out, out[-3000:] + err[-2000:]
    assert out.count("Submitted 1 run(s)") == 1  # the lost run, once: the second dlbench submitted nothing
    recorded = {run_id: r["record"] for run_id, r in runs(results).items()}
    assert recorded[first]["outcome"] == "killed" and recorded[first]["slurm"]["state"] == "CANCELLED"
    # the failed node's run is the orchestrator's error, so it was submitted again, and ran
    assert f"{second}: error: its node failed" in out and "submitting it again" in out
    assert recorded[second]["outcome"] == "ok" and recorded[second]["slurm"]["job_id"] != jobs[second]
    assert recorded[third]["outcome"] == "ok"
    assert first_resume.returncode == 1  # one run (the cancelled one) did not finish ok
    assert dlbench("verify", results, env=cluster).returncode == 0
    again = dlbench("run", "--resume", results, env=cluster, timeout=300)
    assert "Nothing to resume" in again.stdout  # nothing is ever submitted twice
    assert not our_containers(docker_client, tmp_path / "results")


def test_sigterm_on_an_attached_run_cancels_its_jobs_and_resume_finishes_them(cluster, docker_client, tmp_path):
    path = suite(tmp_path, MEDIUM, MEDIUM, "", slurm="max_jobs: 2")
    proc = subprocess.Popen([*DLBENCH, "run", str(path), "--backend", "slurm"], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **cluster})
    try:
        results = wait_for("a results directory", lambda: next((tmp_path / "results").glob("*/slurm/jobs.json"),
                                                              None)).parent.parent
        wait_for("a run started", lambda: any(node_record(results, r).get("phase") == "running"
                                              for r in jobs_of(results)))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Interrupted: cancelled 3 job(s)" in out, out[-3000:] + err[-2000:]
    jobs = jobs_of(results)
    assert all(job_state(job) in ("CANCELLED", "") for job in jobs.values())  # none left queued or running
    recorded = {run_id: r["record"] for run_id, r in runs(results).items()}
    assert all(r["outcome"] == "error" and "interrupted" in r["message"] for r in recorded.values()), recorded
    assert not our_containers(docker_client, tmp_path / "results")
    resumed = dlbench("run", "--resume", results, env=cluster, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert all(r["record"]["outcome"] == "ok" for r in runs(results).values())


def test_runtime_local_runs_the_frameworks_virtualenv_on_the_node(cluster, tmp_path):
    """A node without a container engine: the job runs the local backend's virtualenv (on
    the shared filesystem: the cache is on this host, which both nodes are)."""
    path = write_suite(tmp_path, f"name: on-slurm-local\ndefaults: {{{TINY}}}\n"
                                 "runs:\n  - {framework: pytorch, api: eager, seed: 1}\n"
                                 "slurm: {partition: debug, poll_seconds: 2, runtime: local}\n")
    proc = dlbench("run", path, "--backend", "slurm", env=cluster, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    (record,) = (r["record"] for r in runs(results).values())
    assert record["outcome"] == "ok" and record["environment"]["kind"] == "venv"
    assert record["resources"]["enforced"] is False  # a virtualenv enforces no cpus or memory
    assert record["slurm"]["state"] == "COMPLETED" and record["slurm"]["node"] in ("n1", "n2")
    assert record["data"]["source"] == "DLBENCH_DATA_DIR"
    assert "image" not in node_record(results, record["run_id"])  # no engine was asked


def test_a_job_submitted_but_never_recorded_is_found_by_its_name_not_submitted_again(cluster, tmp_path):
    """dlbench stopped between sbatch and writing the job's ID down (jobs.json holds the
    submission under its name only): the resume finds the job by name and follows it."""
    path = suite(tmp_path, "")
    proc = dlbench("run", path, "--backend", "slurm", "--detach", env=cluster, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    jobs_file = results / "slurm" / "jobs.json"
    jobs = json.loads(jobs_file.read_text())
    (array,) = jobs["arrays"].values()
    submitted = array["job_id"]
    array["job_id"], jobs["runs"] = None, {}
    jobs_file.write_text(json.dumps(jobs))
    resumed = dlbench("run", "--resume", results, env=cluster, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert "re-attaching to the jobs of 1 run(s)" in resumed.stdout and "Submitted" not in resumed.stdout
    (record,) = (r["record"] for r in runs(results).values())
    assert record["outcome"] == "ok" and record["slurm"]["job_id"] == f"{submitted}_0"


def test_images_reach_the_nodes_through_a_registry_by_digest(cluster, registry, tmp_path):
    path = suite(tmp_path, "")
    proc = dlbench("run", path, "--backend", "slurm", "--registry", registry, env=cluster, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"to {registry}/dlbench/chainer:" in proc.stdout  # pushed by the host
    results = only_results_dir(tmp_path / "results")
    (task,) = json.loads(next((results / "slurm").glob("tasks-*.json")).read_text())["runs"]
    pushed = task["environment"]["pushed"]
    assert pushed["reference"].startswith(f"{registry}/dlbench/chainer@sha256:") and "saved" not in task["environment"]
    assert json.loads((results / "plan.json").read_text())["slurm"]["registry"] == registry  # a resume uses it too
    catalog = json.loads(urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=30).read())
    assert "dlbench/chainer" in catalog["repositories"]
    (record,) = (r["record"] for r in runs(results).values())
    assert record["outcome"] == "ok" and record["environment"]["id"] == pushed["id"]


def test_a_two_node_run_has_one_worker_per_node_and_trains_what_one_node_trains(cluster, tmp_path):
    """parallel.nodes: 2 is one job over both nodes: srun starts one task per worker (n2's in
    its own network namespace, reaching n1 over the veth pair), the rendezvous comes from
    Slurm's environment, and with the same global batch the losses equal the 1-node run's."""
    path = write_suite(tmp_path, "name: two-nodes\n"
                                 "defaults: {dataset: mnist, train_split: test, train_limit: 256, test_limit: 256,\n"
                                 "           batch_size: 64, optimizer: sgd, learning_rate: 0.05, dropout: false,\n"
                                 "           warmup_steps: 1, resources: {cpus: 1}}\n"
                                 "runs:\n"
                                 "  - {framework: pytorch, api: eager, parallel: {workers: 1, nodes: 1, scaling: strong}}\n"
                                 "  - {framework: pytorch, api: eager, parallel: {workers: 1, nodes: 2, scaling: strong}}\n"
                                 "slurm: {partition: debug, poll_seconds: 2, runtime: local}\n")
    proc = dlbench("run", path, "--backend", "slurm", env=cluster, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = only_results_dir(tmp_path / "results")
    one, two = (r for _, r in sorted(runs(results).items()))
    assert one["record"]["outcome"] == two["record"]["outcome"] == "ok"
    p = two["metrics"]["parallel"]
    assert (p["world_size"], p["nodes"], p["launcher"], p["hosts"]) == (2, 2, "srun", ["n1", "n2"])
    assert [(r["rank"], r["node"], r["status"]) for r in p["ranks"]] == [(0, "n1", "ok"), (1, "n2", "ok")]
    assert node_record(results, two["record"]["run_id"])["node_addresses"] == ["10.213.0.1", "10.213.0.2"]
    assert two["metrics"]["environment"]["GLOO_SOCKET_IFNAME"] == "dlbv0"  # rank 0's, on n1
    assert two["record"]["slurm"]["node"] == "n[1-2]"
    for a, b in ((one["metrics"]["epochs"][0]["loss"], two["metrics"]["epochs"][0]["loss"]),
                 (one["metrics"]["test"]["loss"], two["metrics"]["test"]["loss"])):
        assert abs(a - b) <= 2e-4 * abs(a), (a, b)
