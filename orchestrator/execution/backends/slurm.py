"""Slurm backend: each planned run is one task of a throttled Slurm job array, run on a
node in the same locked-down container as the docker backend (slurm_node.py).

Registered as `slurm` in orchestrator/execution/backends/__init__.py. The host builds (or
reuses) each image with its own engine and saves it once, by image ID, to a shared image
store (orchestrator.images.store); a node lacking it loads it and checks the ID. The host
and the nodes must share the results directory, the image store, the datasets and this
dlbench checkout at the same paths; preflight checks that and everything else it can ask
Slurm before a job is submitted (suite's `slurm:` block: orchestrator/schemas/suite.schema.json).

Under the results directory:
  slurm/jobs.json          every submission: its job array ID, and each run's job (12_3)
  slurm/tasks-<token>.json what each task of one array runs (the node reads it)
  slurm/job.sh             the batch script: runs slurm_node with this Python
  slurm/logs/<A>_<a>.log   each job's own output (Slurm's --output)
  runs/<id>/node.json      the node's record of the run (slurm_node.NODE_FILE)
"""
from __future__ import annotations

import json
import math
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from contract.jsonio import write_json_atomic
from orchestrator.errors import DlbenchError
from orchestrator.execution import sysinfo
from orchestrator.execution.backends import slurm_commands as slurm
from orchestrator.execution.backends.base import (
    Execution,
    JobStatus,
    ScheduledBackend,
    Submission,
    Unavailable,
)
from orchestrator.execution.backends.docker import CONTAINER_DATA, RESULTS_LABEL, DockerBackend, connect
from orchestrator.execution.backends.local import LocalBackend
from orchestrator.execution.backends.slurm_node import JOB_LABEL, NODE_FILE
from orchestrator.images import registry, store
from orchestrator.paths import REPO_ROOT, cache_dir
from orchestrator.plan.rules import memory_bytes
from orchestrator.plan.suite import PlannedRun, Suite
from orchestrator.results import nofollow
from orchestrator.results.directory import now_iso

DEFAULT_POLL_S = 10.0
LOAD_MARGIN_MIN = 5        # added to a run's timeout for its Slurm time limit: image loading
TAIL_LINES = 20            # of a failed job's output, into run.json and the report
# Filesystems that are shared by their nature (/proc/self/mountinfo's type column).
SHARED_FS_TYPES = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "glusterfs",
                   "fuse.glusterfs", "fuse.cephfs", "fuse.sshfs", "cifs", "smb3", "panfs",
                   "fuse.weka", "wekafs", "fuse.juicefs", "9p")


class SlurmBackend(ScheduledBackend):
    name = "slurm"
    multi_node = True
    summary = "one Slurm job per run"
    # as its default runtime enforces (the docker backend's container); runtime local records
    # in each run.json what it does not enforce
    enforces = DockerBackend.enforces
    supports_no_build = True

    def __init__(self, docker: DockerBackend | None):
        self._docker = docker           # builds and saves the images, on this host's engine
        self.settings: dict = {}
        self.partition: str | None = None
        self.exclude: list[str] = []
        self.poll_s = DEFAULT_POLL_S
        self._nodes: list[str] = []         # the nodes the runs may use (preflight)
        self._suite: Suite | None = None
        self._max_minutes: int | None = None  # the partition's MaxTime
        self._states: dict[str, str] = {}   # run ID -> what was last said of its job
        self._accounting: bool | None = None

    @property
    def docker(self) -> DockerBackend:
        """This host's engine, which builds the images and saves them for the nodes."""
        if self._docker is None:
            client, problem = connect()
            if client is None:
                raise DlbenchError(f"the slurm backend's docker runtime needs a Docker engine on this "
                                   f"host to build the images and save them for the nodes ({problem}); "
                                   "start dockerd or set DOCKER_HOST, or use slurm.runtime: local")
            self._docker = DockerBackend(client)
        return self._docker

    @property
    def runtime(self) -> str:
        return self.settings.get("runtime") or "docker"

    @classmethod
    def open(cls) -> SlurmBackend:
        missing = slurm.missing_commands()
        if missing:
            raise Unavailable(f"BACKEND=slurm but {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not on the PATH; install "
                              "Slurm's client commands (Debian: slurm-client) or run where they are",
                              reason="no Slurm commands on the PATH")
        return cls(None)

    @classmethod
    def observer(cls) -> SlurmBackend:
        missing = slurm.missing_commands()
        if missing:
            raise DlbenchError(f"{', '.join(missing)}: not on the PATH; `dlbench status` asks Slurm "
                               "about the jobs: run it where Slurm's client commands are")
        return cls(None)

    def system_info(self) -> dict:
        return self.docker.system_info() if self.runtime == "docker" else sysinfo.collect()

    # -- preflight: everything Slurm can tell before a job is submitted ----------
    def preflight(self, suite: Suite) -> None:
        self.settings = dict(suite.slurm or {})
        self.poll_s = float(self.settings.get("poll_seconds", DEFAULT_POLL_S))
        wide = next((run for run in suite.runs if run.nodes > 1), None)
        if wide is not None and self.runtime != "local":
            # a network-less container per node cannot reach the other nodes' workers
            raise DlbenchError(f"{suite.path}: slurm.runtime: run {wide.run_id} spans {wide.nodes} nodes; "
                               "multi-node runs need runtime: local (the framework's virtualenv on "
                               "each node)")
        self._reach_controller()
        partitions = slurm.partitions()
        self.partition = self.settings.get("partition") or slurm.default_partition(partitions)
        if self.partition is None:
            raise DlbenchError(f"{suite.path}: slurm.partition: this cluster has no default partition; "
                               f"name one (it has: {', '.join(sorted(partitions))})")
        if self.partition not in partitions:
            raise DlbenchError(f"{suite.path}: slurm.partition: unknown partition {self.partition!r} "
                               f"(this cluster has: {', '.join(sorted(partitions)) or 'none'})")
        partition = partitions[self.partition]
        if partition.get("State") != "UP":
            raise DlbenchError(f"{suite.path}: slurm.partition: partition {self.partition} is "
                               f"{partition.get('State')}, not UP")
        members = slurm.hostnames(partition["Nodes"]) if partition.get("Nodes") else []
        chosen = self._chosen_nodes(suite, members)
        self._check_names(suite, partition)
        self._check_time(suite, partition)
        self._check_gpus(suite, chosen)
        if self.runtime == "docker":  # the images, on this host; the GPUs are the nodes' (above)
            self.docker.build = self.build
            self.docker.preflight_images(suite)
        elif not self.build:
            raise DlbenchError("--no-build applies to the docker runtime (images); slurm.runtime: local "
                               "makes each framework's virtualenv when it is missing")
        self._nodes, self._suite = chosen, suite

    def _reach_controller(self) -> None:
        problem = slurm.controller_problem()
        if problem is None:
            return
        if slurm.auth_type() == "auth/munge":
            munge = slurm.munge_problem()
            if munge:
                raise DlbenchError(f"munge is not running on this host ({munge}); Slurm "
                                   "authenticates with it: start munged (as the munge user)")
        raise DlbenchError(f"the Slurm controller does not answer ({problem}); start slurmctld, "
                           "or set SLURM_CONF to this cluster's slurm.conf")

    def _chosen_nodes(self, suite: Suite, members: list[str]) -> list[str]:
        """The partition's nodes the runs may use; a `nodelist` becomes --exclude of the
        others (sbatch's --nodelist would ask for all of them at once, for one run)."""
        if not self.settings.get("nodelist"):
            return members
        try:
            wanted = slurm.hostnames(self.settings["nodelist"])
        except slurm.SlurmError as exc:
            raise DlbenchError(f"{suite.path}: slurm.nodelist: {exc}") from None
        outside = [node for node in wanted if node not in members]
        if outside:
            raise DlbenchError(f"{suite.path}: slurm.nodelist: {outside[0]} is not a node of partition "
                               f"{self.partition} (it has: {', '.join(members)})")
        self.exclude = [node for node in members if node not in wanted]
        return wanted

    def _check_names(self, suite: Suite, partition: dict[str, str]) -> None:
        """account and qos: against the accounting database where there is one; without
        one, Slurm takes any account, unless the partition lists those it allows."""
        for key in ("account", "qos"):
            value = self.settings.get(key)
            if not value:
                continue
            if self.accounting():
                known = slurm.known_names(key)
            else:
                allowed = partition.get("AllowAccounts" if key == "account" else "AllowQos", "ALL")
                known = set(allowed.split(",")) if allowed not in ("ALL", "") else {value}
            if value not in known:
                raise DlbenchError(f"{suite.path}: slurm.{key}: unknown {key} {value!r} "
                                   f"(known: {', '.join(sorted(known)) or 'none'}; sacctmgr show {key})")

    def _check_time(self, suite: Suite, partition: dict[str, str]) -> None:
        """A `time` beyond the partition's MaxTime is refused; without one, each run's
        limit is its timeout plus LOAD_MARGIN_MIN, capped at MaxTime."""
        self._max_minutes = slurm_minutes(partition.get("MaxTime", "UNLIMITED"))
        given = self.settings.get("time")
        wanted = slurm_minutes(str(given)) if given is not None else None
        if wanted is not None and self._max_minutes is not None and wanted > self._max_minutes:
            raise DlbenchError(f"{suite.path}: slurm.time: {wanted} min per run is more than partition "
                               f"{self.partition}'s MaxTime ({partition['MaxTime']}); ask for less, "
                               "or choose another partition")

    def _check_gpus(self, suite: Suite, chosen: list[str]) -> None:
        wanted = max((self.gpus_per_run(run) for run in suite.runs), default=0)
        if not wanted:
            return
        nodes = slurm.nodes()
        most = max((slurm.gpus_of(nodes[name]) for name in chosen if name in nodes), default=0)
        if most < wanted:
            raise DlbenchError(f"{suite.path}: slurm.gpus_per_run: a run asks for {wanted} GPU(s) but "
                               f"no node it may use has more than {most} (partition {self.partition}: "
                               f"{', '.join(chosen)}); lower gpus_per_run or choose another partition")

    def check_results_location(self, root: Path) -> None:
        """The last of preflight: the results, the image store, this checkout and its Python
        must be where every node finds them; then sbatch --test-only of each kind of job
        the suite will submit (nothing is submitted)."""
        self._check_shared(root)
        assert self._suite is not None, "preflight first"
        for options in sorted({tuple(self.job_options(run)) for run in self._suite.runs}):
            refused = slurm.test_only(list(options))
            if refused:
                raise DlbenchError(f"{self._suite.path}: slurm: sbatch refuses the runs' jobs "
                                   f"({refused}; options: {' '.join(options)})")

    def _check_shared(self, root: Path) -> None:
        """Shared: a network filesystem, or nodes that are all this host (their
        NodeHostname), unless the suite says `shared_filesystem: true`."""
        if self.settings.get("shared_filesystem") is True:
            return
        here = socket.gethostname()
        nodes = slurm.nodes()
        if all(nodes.get(name, {}).get("NodeHostName") == here for name in self._nodes):
            return  # every node runs on this very machine: it shares everything
        paths: dict[str, Path] = {"results directory": root, "dlbench checkout": REPO_ROOT,
                                  "Python": Path(self.python())}
        if self.runtime == "local":
            paths["virtualenvs"] = LocalBackend().venv_root
        elif not self.settings.get("registry"):  # images reach the nodes through the store
            paths["image store"] = self.image_store()
        for what, path in paths.items():
            kind = filesystem_type(path)
            if kind not in SHARED_FS_TYPES:
                raise DlbenchError(
                    f"{path}: the {what} is on a {kind} filesystem, which the nodes "
                    f"({', '.join(self._nodes)}) do not share with this host; put it on a shared "
                    "filesystem (NFS, Lustre, GPFS, BeeGFS, CephFS: --results, slurm.image_store), or "
                    "set slurm.shared_filesystem: true if it is shared after all")

    # -- environments -------------------------------------------------------
    def image_store(self) -> Path:
        return Path(self.settings.get("image_store") or cache_dir() / "slurm-images").absolute()

    def python(self) -> str:
        return self.settings.get("python") or sys.executable

    def prepare(self, framework, flavour, progress):
        if self.runtime == "local":  # a virtualenv in the (shared) cache, as the local backend makes it
            return LocalBackend().prepare(framework, flavour, progress)
        info = self.docker.prepare(framework, flavour, progress)
        if self.settings.get("registry"):
            return {**info, "pushed": registry.push(self.docker.client, info["id"], info.get("tag"),
                                                    self.settings["registry"], progress)}
        saved = store.save(self.docker.client, info["id"], info.get("tag"), self.image_store(), progress)
        return {**info, "saved": saved}

    def dataset_path(self, run: PlannedRun, host_dir: str) -> str:
        """The dataset directory as the workload sees it on the node: the container's mount,
        or the shared directory itself (runtime local)."""
        return str(host_dir) if self.runtime == "local" else f"{CONTAINER_DATA}/{run.dataset}"

    def remove_leftovers(self, results_path: Path) -> list[str]:
        """This host's containers for these results whose job is no longer alive (a node
        that is this host, where SIGKILL left one); the nodes clean their own up."""
        if self.runtime != "docker":
            return []
        live = {entry.job_id for entry in slurm.queue(self._array_ids(results_path)).values()
                if entry.state not in slurm.ENDED}
        removed = []
        for container in self.docker.client.containers.list(
                all=True, filters={"label": f"{RESULTS_LABEL}={results_path}"}):
            if container.labels.get(JOB_LABEL) not in live:
                container.remove(force=True)
                removed.append(f"container {container.name}")
        return removed

    # -- the jobs -----------------------------------------------------------
    def time_limit(self, run: PlannedRun) -> str:
        given = self.settings.get("time")
        if given is not None:
            return str(given)
        minutes = math.ceil(run.timeout / 60) + LOAD_MARGIN_MIN
        return str(minutes if self._max_minutes is None else min(minutes, self._max_minutes))

    def gpus_per_run(self, run: PlannedRun) -> int:
        if run.spec["device"] != "gpu":
            return 0
        return int(self.settings.get("gpus_per_run") or len(run.gpus or []) or 1)

    def job_options(self, run: PlannedRun) -> list[str]:
        """sbatch's options for one run's job: what the suite's `slurm:` block asks, and
        its resources (cpus: whole CPUs; memory: --mem, the container's limit as well)."""
        cpus = math.ceil(float(run.resources.get("cpus") or run.workers_per_node))
        if run.nodes > 1:  # one task per worker on each node (srun in the job starts them)
            tasks = [f"--nodes={run.nodes}", f"--ntasks-per-node={run.workers_per_node}"]
            cpus = max(1, cpus // run.workers_per_node)
        else:  # one task: the run's own launcher starts its workers
            tasks = ["--nodes=1", "--ntasks=1"]
        options = [f"--partition={self.partition}", *tasks, f"--time={self.time_limit(run)}",
                   f"--cpus-per-task={cpus}",
                   # a failed node's job is the orchestrator's `error`, resubmitted by --resume,
                   # never silently started again elsewhere from a half-written run directory
                   "--no-requeue"]
        for key, flag in (("account", "--account"), ("qos", "--qos"), ("constraint", "--constraint")):
            if self.settings.get(key):
                options.append(f"{flag}={self.settings[key]}")
        if self.exclude:
            options.append(f"--exclude={','.join(self.exclude)}")
        if run.resources.get("memory"):
            options.append(f"--mem={math.ceil(memory_bytes(run.resources['memory']) / 2**20)}M")
        gpus = self.gpus_per_run(run)
        if gpus:  # per node: one per worker of a parallel run
            options.append(f"--gres=gpu:{max(gpus, run.workers_per_node)}")
        return options

    def submit(self, results_path: Path, submissions: list[Submission], say) -> None:
        folder = results_path / "slurm"
        (folder / "logs").mkdir(parents=True, exist_ok=True)
        script = folder / "job.sh"
        script.write_text("#!/bin/sh\n# One dlbench run on a Slurm node: "
                          "orchestrator/execution/backends/slurm_node.py\n"
                          f"exec {shlex.quote(self.python())} -m "
                          "orchestrator.execution.backends.slurm_node \"$@\"\n", encoding="utf-8")
        groups: dict[tuple[str, ...], list[Submission]] = {}
        for submission in submissions:
            groups.setdefault(tuple(self.job_options(submission.run)), []).append(submission)
        for options, members in groups.items():
            self._submit_array(results_path, script, list(options), members, say)

    def _submit_array(self, results_path: Path, script: Path, options: list[str],
                      members: list[Submission], say) -> None:
        token = uuid.uuid4().hex[:10]
        name = f"dlbench-{token}"
        tasks = results_path / "slurm" / f"tasks-{token}.json"
        write_json_atomic(str(tasks), {"runs": [
            {"run": m.run.to_dict(), "environment": m.environment, "host_data_dir": m.host_data_dir}
            for m in members]})
        jobs = self._jobs(results_path)
        # recorded before sbatch: a crash between the two is found again by the job's name
        jobs["arrays"][token] = {"name": name, "job_id": None, "submitted_at": now_iso(),
                                 "runs": [m.run.run_id for m in members], "options": options}
        self._save_jobs(results_path, jobs)
        throttle, after = "", []
        if self.settings.get("max_jobs"):
            # %N throttles one array; one submitted while others of the suite still run waits
            # for them, so that max_jobs holds for the whole suite
            throttle = f"%{self.settings['max_jobs']}"
            live = {entry.job_id.split("_")[0] for entry in slurm.queue(self._array_ids(results_path)).values()
                    if entry.state not in slurm.ENDED}
            after = [f"--dependency=afterany:{':'.join(sorted(live))}"] if live else []
        try:
            array_id = slurm.submit([*options, *after, f"--job-name={name}",
                                     f"--array=0-{len(members) - 1}{throttle}",
                                     f"--output={results_path}/slurm/logs/%A_%a.log",
                                     f"--chdir={REPO_ROOT}"], str(script), [str(results_path), str(tasks)])
        except slurm.SlurmError as exc:
            del jobs["arrays"][token]
            self._save_jobs(results_path, jobs)
            raise DlbenchError(f"sbatch refused the jobs: {exc}") from None
        self._record_array(jobs, token, array_id)
        self._save_jobs(results_path, jobs)
        say(f"Submitted {len(members)} run(s) as Slurm job array {array_id} "
            f"({' '.join(o for o in options if not o.startswith(('--nodes', '--ntasks', '--no-requeue')))}"
            f"{', at most ' + str(self.settings['max_jobs']) + ' at once' if throttle else ''})")
        for index, member in enumerate(members):
            say(f"    {member.run.run_id}: job {array_id}_{index}")

    @staticmethod
    def _record_array(jobs: dict, token: str, array_id: str) -> None:
        array = jobs["arrays"][token]
        array["job_id"] = array_id
        for index, run_id in enumerate(array["runs"]):
            jobs["runs"][run_id] = {"job_id": f"{array_id}_{index}", "array": token}

    @staticmethod
    def _jobs(results_path: Path) -> dict:
        try:
            jobs = json.loads(nofollow.read_bytes(results_path, "slurm/jobs.json"))
        except FileNotFoundError:
            return {"arrays": {}, "runs": {}}
        except (nofollow.RefusedEntry, ValueError) as exc:
            raise DlbenchError(f"{results_path}/slurm/jobs.json: unreadable ({exc}); the suite's jobs "
                               "are unknown, cancel them by name (squeue -n 'dlbench-*')") from None
        return jobs

    @staticmethod
    def _save_jobs(results_path: Path, jobs: dict) -> None:
        write_json_atomic(str(results_path / "slurm" / "jobs.json"), jobs)

    def _array_ids(self, results_path: Path) -> set[str]:
        return {a["job_id"] for a in self._jobs(results_path)["arrays"].values() if a["job_id"]}

    def recorded_jobs(self, results_path: Path) -> set[str]:
        jobs = self._jobs(results_path)
        unrecorded = [token for token, a in jobs["arrays"].items() if a["job_id"] is None]
        for token in unrecorded:  # dlbench stopped between sbatch and writing the ID down
            found = slurm.job_ids_named(jobs["arrays"][token]["name"])
            if found:
                self._record_array(jobs, token, found[0])
            else:  # never submitted (or long forgotten): its runs have no job, so they run again
                del jobs["arrays"][token]
        if unrecorded:
            self._save_jobs(results_path, jobs)
        return set(jobs["runs"])

    def follow(self, results_path: Path, run_ids: set[str], say,
               give_up_after: float | None = None) -> Iterator[list[tuple[str, Execution]]]:
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while run_ids:
            jobs = self._jobs(results_path)["runs"]
            wanted = {run_id: jobs[run_id] for run_id in sorted(run_ids) if run_id in jobs}
            queued = slurm.queue({job["job_id"].split("_")[0] for job in wanted.values()})
            ended = [(run_id, Execution(None, interrupted=True, message="interrupted before its job "
                                                                      "was submitted"))
                     for run_id in sorted(run_ids) if run_id not in jobs]
            for run_id, job in wanted.items():
                entry = queued.get(job["job_id"])
                if entry is not None and entry.state not in slurm.ENDED:
                    self._say_state(run_id, job["job_id"], entry, say)
                else:
                    ended.append((run_id, self._ended(results_path, run_id, job, entry)))
            if ended:
                yield ended
            if not run_ids or (deadline is not None and time.monotonic() > deadline):
                return
            time.sleep(self.poll_s)

    def _say_state(self, run_id: str, job_id: str, entry: slurm.QueueEntry, say) -> None:
        words = f"running on {entry.node}" if entry.state == "RUNNING" else \
            f"{entry.state.lower()}" + (f" ({entry.reason})" if entry.reason not in ("", "None") else "")
        if self._states.get(run_id) != words:
            self._states[run_id] = words
            say(f"    {run_id}: {words} (job {job_id})")

    def accounting(self) -> bool:
        if self._accounting is None:
            self._accounting = slurm.accounting()
        return self._accounting

    def _ended(self, results_path: Path, run_id: str, job: dict,
               entry: slurm.QueueEntry | None) -> Execution:
        """What an ended job did: Slurm's final word on it (squeue, else scontrol, else
        sacct), and the node's record of the run (node.json)."""
        job_id = job["job_id"]
        record = slurm.job_record(job_id) or {}
        account = slurm.accounting_record(job_id) if self.accounting() else None
        state = (entry.state if entry else None) or record.get("JobState") or \
            (account or {}).get("State") or "UNKNOWN"
        node = _read_json(results_path, f"runs/{run_id}/{NODE_FILE}")
        log = f"slurm/logs/{job_id}.log"
        slurm_record = {
            "job_id": job_id, "state": state,
            "node": (entry.node if entry else None) or record.get("NodeList") or
            (account or {}).get("NodeList") or node.get("node"),
            "partition": record.get("Partition") or (account or {}).get("Partition") or self.partition,
            "exit_code": record.get("ExitCode") or (account or {}).get("ExitCode"),
            "elapsed": record.get("RunTime") or (account or {}).get("Elapsed") or (entry.elapsed if entry else None),
            "max_rss": (account or {}).get("MaxRSS") or
            (f"{node['max_rss_kb']}K" if isinstance(node.get("max_rss_kb"), int) else None),
            "log": log,
        }
        if "execution" in node:
            execution = Execution.from_dict(node["execution"])
            execution.wall_s = node.get("wall_s")
        else:
            where = f" on {slurm_record['node']}" if slurm_record["node"] else ""
            execution = Execution(None, message=f"job {job_id} ended {state}{where} before the run's "
                                                f"record was written (its output: {log})")
        execution.scheduler_state = state
        execution.started = node.get("phase") in ("running", "done")
        if job.get("cancelled"):
            execution.interrupted = True
            execution.message = f"interrupted: dlbench cancelled its job {job_id}"
        if state != "COMPLETED":
            slurm_record["output_tail"] = self._tail(results_path, run_id, log)
        execution.recorded = {**execution.recorded, "slurm": slurm_record,
                              **({"started_at": node["started_at"]} if "started_at" in node else {})}
        self._remove_job_containers(job_id)
        return execution

    @staticmethod
    def _tail(results_path: Path, run_id: str, log: str) -> list[str]:
        """The last lines of what the run printed, else of what its job printed."""
        for rel in (f"runs/{run_id}/output.log", log):
            try:
                text = nofollow.read_bytes(results_path, rel).decode("utf-8", "replace")
            except (OSError, nofollow.RefusedEntry):
                continue
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-TAIL_LINES:]
        return []

    def _remove_job_containers(self, job_id: str) -> None:
        """A job SIGKILLed on a node that is this host leaves its container: removed here."""
        if self.runtime != "docker":
            return
        try:
            for container in self.docker.client.containers.list(
                    all=True, filters={"label": f"{JOB_LABEL}={job_id}"}):
                container.remove(force=True)
        except Exception:  # noqa: BLE001 - best effort: the node's next job removes it too
            pass

    def cancel(self, results_path: Path, run_ids: list[str]) -> list[str]:
        jobs = self._jobs(results_path)
        ids = [jobs["runs"][run_id]["job_id"] for run_id in run_ids if run_id in jobs["runs"]]
        for run_id in run_ids:
            if run_id in jobs["runs"]:
                jobs["runs"][run_id]["cancelled"] = True  # before scancel: never mistaken for a user's
        self._save_jobs(results_path, jobs)
        slurm.cancel(ids)
        return ids

    def status(self, results_path: Path, run_ids: list[str]) -> dict[str, JobStatus]:
        jobs = self._jobs(results_path)["runs"]
        wanted = {run_id: jobs[run_id]["job_id"] for run_id in run_ids if run_id in jobs}
        queued = slurm.queue({job_id.split("_")[0] for job_id in wanted.values()})
        found = {}
        for run_id, job_id in wanted.items():
            entry = queued.get(job_id)
            if entry is not None:
                detail = entry.reason if entry.state == "PENDING" else entry.elapsed
                found[run_id] = JobStatus(job_id, entry.state, entry.node or None, detail or None)
            else:
                record = slurm.job_record(job_id) or {}
                found[run_id] = JobStatus(job_id, record.get("JobState") or "UNKNOWN (no longer in the queue)",
                                          record.get("NodeList") or None)
        return found


def _read_json(results_path: Path, rel: str) -> dict:
    try:
        value = json.loads(nofollow.read_bytes(results_path, rel))
    except (OSError, ValueError, nofollow.RefusedEntry):
        return {}
    return value if isinstance(value, dict) else {}


def slurm_minutes(text: str) -> int | None:
    """Slurm's time (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]], UNLIMITED) in whole minutes,
    rounded up; None for UNLIMITED/INFINITE."""
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts[:3]
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    return math.ceil(total / 60)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding path (the longest mount point above it in
    /proc/self/mountinfo), e.g. ext4, nfs4, lustre."""
    target = os.path.realpath(path)
    while not os.path.exists(target) and target != "/":
        target = os.path.dirname(target)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                mount = fields[4].encode().decode("unicode_escape")
                fstype = fields[fields.index("-") + 1]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, fstype
    except (OSError, ValueError, IndexError):
        pass
    return kind
