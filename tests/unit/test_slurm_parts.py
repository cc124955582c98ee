"""The slurm backend's parts that need no cluster: Slurm's text formats, the outcome a
scheduler state gives, the sbatch options a suite's `slurm:` block makes. (The backend
itself runs against a real cluster: tests/integration/test_slurm_*.py.)"""
from __future__ import annotations

import json

import pytest

from orchestrator.execution.backends import slurm_commands as slurm
from orchestrator.execution.backends.base import Execution
from orchestrator.execution.backends.slurm import SlurmBackend, filesystem_type, slurm_minutes
from orchestrator.execution.runner import RunAttempt
from orchestrator.plan.rules import Target
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import SCHEDULER_STATES, ResultsDir, classify
from tests.integration.helpers import write_suite


@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("00:30:00", 30), ("1:30", 2), ("2-00:00:00", 2880), ("1-12", 2160),
    ("0:00:01", 1), ("UNLIMITED", None), ("INFINITE", None)])
def test_slurm_times_in_whole_minutes(text, minutes):
    assert slurm_minutes(text) == minutes


def test_a_scontrol_record_keeps_values_with_spaces():
    line = ("JobId=12 ArrayJobId=12 ArrayTaskId=3 JobName=dlbench-ab JobState=PENDING "
            "Reason=Job's_account_not_known WorkDir=/home/a user/dlbench Command=/x/job.sh a b "
            "NodeList=(null) ExitCode=0:0")
    record = slurm.parse_record(line)
    assert record["WorkDir"] == "/home/a user/dlbench"
    assert record["Command"] == "/x/job.sh a b"
    assert record["JobState"] == "PENDING" and record["ExitCode"] == "0:0"


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", 0), ("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("gpu:a100:2,gpu:v100:2", 4),
    ("mps:100,gpu:1", 1), ("gpuish:3", 0)])
def test_gpus_a_node_offers(gres, gpus):
    assert slurm.gpus_of({"Gres": gres}) == gpus


def test_filesystem_type_of_real_mounts():
    assert filesystem_type("/proc/self") == "proc"
    assert filesystem_type("/no/such/dir/below/root") == filesystem_type("/")


@pytest.mark.parametrize("state, outcome", [
    ("TIMEOUT", "timeout"), ("DEADLINE", "timeout"), ("OUT_OF_MEMORY", "oom"), ("CANCELLED", "killed"),
    ("NODE_FAIL", "error"), ("PREEMPTED", "error"), ("BOOT_FAIL", "error")])
def test_a_scheduler_state_decides_the_outcome_whatever_the_workload_wrote(state, outcome):
    metrics = {"status": "ok"}
    assert classify(0, metrics, None, scheduler_state=state)[0] == outcome
    assert state in SCHEDULER_STATES


def test_completed_and_failed_jobs_leave_the_outcome_to_the_run():
    assert classify(0, {"status": "ok"}, None, scheduler_state="COMPLETED") == ("ok", None)
    assert classify(1, None, "the workload wrote no metrics.json", scheduler_state="FAILED")[0] == "failed"
    assert classify(137, None, "none", oom_killed=True, scheduler_state="FAILED")[0] == "oom"


@pytest.fixture()
def attempt(tmp_path):
    suite = load_suite(write_suite(tmp_path, "name: s\nruns:\n  - {framework: chainer, api: eager, "
                                             "synthetic: true, train_limit: 64, test_limit: 64, batch_size: 32}\n"))
    results = ResultsDir(tmp_path / "results")
    (results.path / "runs").mkdir(parents=True)
    backend = SlurmBackend(None)

    def make() -> RunAttempt:
        return RunAttempt(suite.runs[0], backend, results, None, {"kind": "image", "id": "sha256:x"})
    return make


def outcome_of(attempt, execution: Execution) -> dict:
    made = attempt()
    made.conclude(execution)
    return json.loads(made.run_dir.file("run.json").read_text())


def test_a_job_cancelled_before_its_run_started_is_resubmitted_not_a_result(attempt):
    record = outcome_of(attempt, Execution(None, scheduler_state="CANCELLED", started=False))
    assert record["outcome"] == "error" and "before the workload started" in record["message"]


def test_a_job_cancelled_while_it_ran_is_killed(attempt):
    record = outcome_of(attempt, Execution(137, scheduler_state="CANCELLED",
                                           recorded={"slurm": {"job_id": "1_0", "state": "CANCELLED"}}))
    assert record["outcome"] == "killed" and record["slurm"]["state"] == "CANCELLED"


def test_a_job_dlbench_cancelled_is_interrupted_and_resubmitted(attempt):
    record = outcome_of(attempt, Execution(137, scheduler_state="CANCELLED", interrupted=True,
                                           message="interrupted: dlbench cancelled its job 1_0"))
    assert record["outcome"] == "error" and record["message"].startswith("interrupted")


def test_a_job_that_ended_without_the_nodes_record_is_an_error(attempt):
    record = outcome_of(attempt, Execution(None, scheduler_state="FAILED", started=True,
                                           message="job 1_0 ended FAILED before the run's record"))
    assert record["outcome"] == "error"


def test_the_time_limit_is_a_timeout_even_before_metrics(attempt):
    record = outcome_of(attempt, Execution(None, scheduler_state="TIMEOUT", wall_s=61.5))
    assert record["outcome"] == "timeout" and record["wall_s"] == 61.5  # the node's clock, not the queue's


def test_an_execution_travels_from_node_to_host_whole():
    execution = Execution(1, oom_killed=True, message="m", container={"id": "c", "name": "n"},
                          resources={"cpus": 1}, recorded={"gpus": {"requested": None}})
    assert Execution.from_dict(json.loads(json.dumps(execution.to_dict()))) == execution


def test_sbatch_options_from_the_slurm_block(tmp_path):
    path = write_suite(tmp_path, """\
        name: s
        runs:
          - {framework: pytorch, api: eager, device: gpu, gpus: [0, 1], resources: {cpus: 2.5, memory: 3g}}
          - {framework: pytorch, api: eager, synthetic: true}
        slurm: {partition: gpu, account: lab, qos: high, constraint: a100, time: "2:00:00", max_jobs: 3}
        """)
    suite = load_suite(path, target=Target.this_host(runs_here=False))  # cpus: 2.5 on a node
    backend = SlurmBackend(None)
    backend.settings, backend.partition, backend.exclude = suite.slurm, "gpu", ["g3", "g4"]
    gpu, cpu = (backend.job_options(run) for run in suite.runs)
    assert gpu == ["--partition=gpu", "--nodes=1", "--ntasks=1", "--time=2:00:00", "--cpus-per-task=3",
                   "--no-requeue", "--account=lab", "--qos=high", "--constraint=a100", "--exclude=g3,g4",
                   "--mem=3072M", "--gres=gpu:2"]
    assert "--gres=gpu:2" not in cpu and "--cpus-per-task=1" in cpu and not any(o.startswith("--mem") for o in cpu)


def test_the_default_time_limit_is_the_timeout_plus_loading_capped_by_the_partition(tmp_path):
    suite = load_suite(write_suite(tmp_path, "name: s\nruns:\n  - {framework: pytorch, api: eager, timeout: 600}\n"))
    backend = SlurmBackend(None)
    backend.partition = "p"
    assert backend.time_limit(suite.runs[0]) == "15"
    backend._max_minutes = 12
    assert backend.time_limit(suite.runs[0]) == "12"


@pytest.mark.parametrize("block, problem", [
    ("{partition: 'a b'}", "slurm.partition"), ("{time: 0}", "slurm.time"), ("{time: '1 hour'}", "slurm.time"),
    ("{max_jobs: 0}", "slurm.max_jobs"), ("{runtime: apptainer}", "slurm.runtime"), ("{poll_seconds: 0.5}",
                                                                                  "slurm.poll_seconds"),
    ("{partion: debug}", "did you mean 'partition'")])
def test_a_bad_slurm_block_is_one_line_naming_the_field(tmp_path, block, problem):
    from orchestrator.errors import DlbenchError

    path = write_suite(tmp_path, f"name: s\nruns:\n  - {{framework: pytorch, api: eager}}\nslurm: {block}\n")
    with pytest.raises(DlbenchError, match=problem.replace("(", r"\(")):
        load_suite(path)


def test_a_gpu_jobs_container_gets_the_gpus_slurm_allocated_nvidia_gpu_faked_by_env(tmp_path, monkeypatch):
    """No GPU here: Slurm's allocation is its environment variable, set by hand; what is
    checked is that the container asks the engine for exactly those GPUs."""
    from orchestrator.execution.backends.slurm_node import NodeDockerBackend, allocated_gpus
    from orchestrator.results.directory import RunDir

    monkeypatch.setenv("SLURM_JOB_GPUS", "2,3")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert allocated_gpus() == [2, 3]
    suite = load_suite(write_suite(tmp_path, "name: s\nruns:\n  - {framework: pytorch, api: eager, device: gpu, "
                                             "synthetic: true}\n"), target=Target.this_host(runs_here=False))
    run = suite.runs[0]
    run.gpus = allocated_gpus()
    backend = NodeDockerBackend(None, "12_0")
    run_dir = RunDir(tmp_path / "results" / "runs" / run.run_id)
    config = backend.container_config(run, run_dir, None, {"id": "sha256:abc", "tag": "t"})
    (request,) = config["device_requests"]
    assert request["DeviceIDs"] == ["2", "3"]
    assert config["labels"]["org.dlbench.slurm-job"] == "12_0"
