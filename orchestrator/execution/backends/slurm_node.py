"""What a dlbench Slurm job runs on its node: one run of a suite, in the same locked-down
container the docker backend starts (same limits, read-only data, network off, non-root),
on the node's own Docker engine; or, with `slurm.runtime: local`, in the framework's
virtualenv as the local backend runs it (on a shared filesystem; nothing enforced but the
timeout, and run.json says so).

    python -m orchestrator.execution.backends.slurm_node RESULTS_DIR TASKS_FILE

TASKS_FILE (slurm/tasks-<token>.json, written by the host) lists the runs of one job
array; SLURM_ARRAY_TASK_ID picks this job's. The job writes only its own run directory:
the workload's metrics.json and output.log, the node-side monitor.jsonl, and node.json
(NODE_FILE) — where it ran, the image it ran, what the container did — which the host
turns into run.json once Slurm says the job ended.

Slurm stops a job (scancel, its time limit, its node set down) with SIGTERM, then SIGKILL
after KillWait; a container belongs to the engine, not to the job, so SIGTERM stops and
removes it here; and a container an earlier attempt of this run left (SIGKILL, no chance
to clean up) is removed before this one starts.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

from contract.jsonio import write_json_atomic
from contract.ranks import merge, read_ranks
from contract.schemas import METRICS_SCHEMA_VERSION
from orchestrator.errors import DlbenchError
from orchestrator.execution.backends import slurm_commands as slurm
from orchestrator.execution.backends.base import Execution
from orchestrator.execution.backends.docker import RESULTS_LABEL, DockerBackend, connect
from orchestrator.execution.backends.local import LocalBackend
from orchestrator.images import registry, store
from orchestrator.plan.suite import PlannedRun
from orchestrator.results.directory import RunDir, now_iso

NODE_FILE = "node.json"
JOB_LABEL = "org.dlbench.slurm-job"
# What an earlier attempt of this run may have left; a requeued job starts afresh.
ATTEMPT_FILES = ("output.log", "metrics.json", "monitor.jsonl", NODE_FILE)


class NodeDockerBackend(DockerBackend):
    """The docker backend as a job uses it: its container carries the job's ID, and a
    SIGTERM that comes before the container started stops it as soon as it has."""

    def __init__(self, client, job_id: str):
        super().__init__(client)
        self.job_id = job_id
        self.terminated = False

    def container_config(self, run, run_dir, host_data_dir, environment) -> dict:
        config = super().container_config(run, run_dir, host_data_dir, environment)
        config["labels"][JOB_LABEL] = self.job_id
        return config

    def _wait(self, container, run):  # type: ignore[override]
        if self.terminated:  # SIGTERM came while the container was being created
            container.stop(timeout=5)
            return container.wait(timeout=60)["StatusCode"], False
        return DockerBackend._wait(container, run)

    def terminate(self) -> None:
        self.terminated = True
        self.interrupt()

    def remove_stale(self, results: Path, run_id: str) -> list[str]:
        """Containers of an earlier attempt of this run (its job was SIGKILLed)."""
        found = self.client.containers.list(all=True, filters={"label": [
            f"{RESULTS_LABEL}={results}", f"org.dlbench.run-id={run_id}"]})
        for container in found:
            container.remove(force=True)
        return [container.name for container in found]


class MultiNodeLocalBackend(LocalBackend):
    """A run over several nodes (`parallel.nodes` > 1): srun starts one task per worker, each
    the framework's virtualenv running `python -m workloads worker`; the worker takes its rank
    from Slurm's environment (SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID) and the rendezvous
    from MASTER_ADDR/PORT: the first node's address and a port free there (this job script
    runs on that node). --kill-on-bad-exit: a worker that dies ends every other one."""

    def __init__(self, hosts: list[str], port: int):
        super().__init__()
        self.hosts, self.port = hosts, port

    def command(self, run, run_dir, python):
        workers, nodes = run.workers_per_node, run.nodes
        return ["srun", "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks={workers * nodes}",
                f"--ntasks-per-node={workers}",
                str(python), "-m", "workloads", "worker", "--spec", str(run_dir.file("spec.json")),
                "--out", str(run_dir.path)]

    def extra_environment(self, run):
        return {"MASTER_ADDR": self.hosts[0], "MASTER_PORT": str(self.port),
                "DLBENCH_BASE_PORT": str(self.port), "DLBENCH_HOSTS": ",".join(self.hosts)}


def node_addresses() -> tuple[list[str], list[str]]:
    """(node names, their addresses) of this job, in Slurm's order (the first runs this)."""
    names = slurm.hostnames(os.environ["SLURM_JOB_NODELIST"])
    known = slurm.nodes()
    return names, [known.get(name, {}).get("NodeAddr") or name for name in names]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def allocated_gpus() -> list[int | str] | None:
    """The GPUs Slurm gave this job (SLURM_JOB_GPUS: the node's GPU indices), if any."""
    value = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS")
    return [int(gpu) if gpu.isdigit() else gpu for gpu in value.split(",") if gpu] if value else None


class Job:
    """This job: its run, its record (node.json), and the container it may have started."""

    def __init__(self, results: Path, task: dict, job_id: str):
        self.results, self.job_id = results, job_id
        self.run = PlannedRun(**task["run"])
        self.environment, self.host_data_dir = task["environment"], task["host_data_dir"]
        self.run_dir = RunDir(results / "runs" / self.run.run_id)
        self.backend: NodeDockerBackend | LocalBackend | None = None
        self.terminated = False
        self.record: dict = {}

    def on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        print(f"dlbench job {self.job_id}: SIGTERM: stopping the run", flush=True)
        if isinstance(self.backend, NodeDockerBackend):
            self.backend.terminate()
        elif self.backend is not None:  # its process group (Slurm signals it too)
            self.backend.interrupt()

    def write(self, **fields) -> None:
        self.record.update(fields)
        write_json_atomic(str(self.run_dir.file(NODE_FILE)), self.record)

    def start(self) -> None:
        for name in ATTEMPT_FILES:  # a fresh attempt: nothing of an earlier one is this one's
            self.run_dir.file(name).unlink(missing_ok=True)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        self.write(job_id=self.job_id, node=node, host=socket.gethostname(),
                   started_at=now_iso(), phase="preparing",
                   restarts=int(os.environ.get("SLURM_RESTART_COUNT") or 0))
        print(f"dlbench job {self.job_id}: run {self.run.run_id} on node {node}", flush=True)

    def execute(self) -> Execution:
        if self.host_data_dir is not None and not os.path.isdir(self.host_data_dir):
            raise DlbenchError(f"node {self.record['node']}: dataset directory {self.host_data_dir} "
                               "is not there; put the datasets on a filesystem every node shares")
        gpus = allocated_gpus()
        if self.run.spec["device"] == "gpu" and gpus:
            self.run.gpus = list(gpus)  # the ones Slurm gave this job, not those the host saw
        if self.run.nodes > 1:
            if self.environment.get("kind") != "venv":
                raise DlbenchError(f"run {self.run.run_id}: parallel.nodes > 1 needs "
                                   "slurm.runtime: local (the docker runtime runs one node's workers)")
            names, hosts = node_addresses()
            self.write(nodes=names, node_addresses=hosts)
            self.backend = MultiNodeLocalBackend(hosts, free_port())
        elif self.environment.get("kind") == "venv":
            self.backend = LocalBackend()
        else:
            self.backend = self._docker_backend()
        if self.terminated:
            return Execution(None, message="stopped before the run started")
        self.write(phase="running")
        execution = self.backend.execute(self.run, self.run_dir, self.host_data_dir,
                                         self.environment, on_event=lambda event: None)
        if isinstance(self.backend, MultiNodeLocalBackend):
            self.merge_ranks(execution)
        return execution

    def merge_ranks(self, execution: Execution) -> None:
        """The workers' rank files into the run's metrics.json, as a one-node launcher does."""
        spec = json.loads(self.run_dir.file("spec.json").read_text(encoding="utf-8"))
        size = self.run.workers_per_node * self.run.nodes
        base = {"schema_version": METRICS_SCHEMA_VERSION, "run_id": self.run.run_id, "status": "failed", "error": None,
                "framework": {"name": self.run.framework, "api": self.run.api, "version": None},
                "workload": spec["workload"], "device": {"type": spec["device"], "name": None},
                "started_at": self.record["started_at"], "finished_at": now_iso()}
        metrics = merge(spec, read_ranks(str(self.run_dir.path), size), base, launcher="srun",
                        hosts=self.record.get("nodes", []))
        if execution.timed_out and metrics["status"] != "ok":
            metrics["error"] = f"timed out; {metrics['error']}"
        write_json_atomic(str(self.run_dir.file("metrics.json")), metrics)

    def _docker_backend(self) -> NodeDockerBackend:
        """The node's engine, holding the run's image (loaded from the store if it lacked
        it), with no container left of an earlier attempt of this run."""
        client, problem = connect()
        if client is None:
            raise DlbenchError(f"node {self.record['node']}: no Docker engine answers ({problem}); "
                               "the slurm backend's docker runtime needs one on every node")
        if "pushed" in self.environment:  # through a registry, by digest
            image = registry.ensure_pulled(client, self.environment["pushed"])
        else:  # through the shared image store
            image = store.ensure_loaded(client, self.environment["saved"])
        self.write(image=image)
        if image["loaded"]:
            print(f"dlbench job {self.job_id}: loaded {image['id'][:19]} from "
                  f"{image.get('archive') or image.get('pulled')}", flush=True)
        backend = NodeDockerBackend(client, self.job_id)
        for name in backend.remove_stale(self.results, self.run.run_id):
            print(f"dlbench job {self.job_id}: removed container {name} of an earlier attempt",
                  flush=True)
        return backend


def max_rss_kb() -> int:
    """The job's peak resident memory as Slurm's MaxRSS counts it without accounting: its own
    processes (this one and its children; the workload's container is the engine's, and its
    memory is in monitor.jsonl)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or "SLURM_ARRAY_TASK_ID" not in os.environ:
        print("usage (inside a dlbench Slurm job): python -m orchestrator.execution.backends."
              "slurm_node RESULTS_DIR TASKS_FILE", file=sys.stderr)
        return 2
    results, tasks_file = Path(argv[0]), Path(argv[1])
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    task = json.loads(tasks_file.read_text(encoding="utf-8"))["runs"][index]
    job = Job(results, task, f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{index}")
    signal.signal(signal.SIGTERM, job.on_sigterm)
    job.start()
    started = time.monotonic()
    try:
        execution = job.execute()
    except DlbenchError as exc:
        execution = Execution(None, message=str(exc))
    job.write(phase="done", finished_at=now_iso(), wall_s=round(time.monotonic() - started, 3),
              terminated=job.terminated, max_rss_kb=max_rss_kb(), execution=execution.to_dict())
    print(f"dlbench job {job.job_id}: exit code {execution.exit_code}"
          + (f" ({execution.message})" if execution.message else ""), flush=True)
    if job.terminated:
        return 128 + signal.SIGTERM
    code = execution.exit_code
    return code if isinstance(code, int) and 0 <= code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
