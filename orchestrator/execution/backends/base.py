"""What every backend provides: the interface the runner, resume, rerun and the CLI use,
and the output handling backends share. A backend reports what it saw of a run
(`Execution`); it never decides the outcome (results.directory.classify does).

Two kinds: a DirectBackend runs one run at a time on this host and waits for it (docker,
local); a ScheduledBackend hands every run to a cluster scheduler as a job, follows the
jobs and gathers what they wrote (slurm; orchestrator.execution.scheduled drives it).

Adding a backend is one module in this package holding one subclass of either, and one
line in the registry (orchestrator/execution/backends/__init__.py). Nothing else names a
backend: the runner, the monitor and the CLI only ever see this interface.
"""
from __future__ import annotations

import abc
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from contract.events import EVENT_PREFIX
from orchestrator.errors import DlbenchError
from orchestrator.execution import monitor, sysinfo
from orchestrator.paths import cache_dir

if TYPE_CHECKING:
    from orchestrator.plan.suite import PlannedRun, Suite
    from orchestrator.results.directory import RunDir

# What a backend can guarantee about a run it executes (Backend.enforces), in words.
# The first three are the suite's `resources`: one the suite asks for and the backend
# does not enforce is recorded in run.json's resources as "enforced": false.
ENFORCEABLE = {
    "cpus": "CPU quota (resources.cpus)",
    "cpuset": "CPU pinning (resources.cpuset)",
    "memory": "memory limit without swap (resources.memory): an overflow is an OOM",
    "timeout": "the run is stopped at its timeout",
    "network_off": "no network inside the run",
    "read_only_root": "read-only root filesystem",
    "read_only_data": "the dataset is mounted read-only",
    "non_root": "the workload runs as a non-root user",
    "no_privileges": "no capabilities, no privilege escalation (no-new-privileges)",
    "gpus": "a GPU run sees only its GPUs (gpus), not merely told which to use",
}
# CUDA's largest compute cache (4 GiB): room for every kernel a framework JIT-compiles from PTX.
CUDA_CACHE_MAXSIZE = 4 * 2**30


class Unavailable(DlbenchError):
    """Backend.open(): this host cannot run the backend now. The message is the one-line
    error when the user asked for this backend; `reason` is what `--backend auto` says
    before it moves on to the next backend (e.g. "No Docker engine reachable (...)")."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Execution:
    """What a backend saw of one run; results.classify turns it into an outcome."""
    exit_code: int | None
    oom_killed: bool = False
    timed_out: bool = False
    message: str | None = None
    container: dict | None = None
    resources: dict = field(default_factory=dict)
    # more of run.json, as the backend saw it: gpus, cuda_cache, environment_scrubbed, slurm
    recorded: dict = field(default_factory=dict)
    # a scheduled run: how long it ran on its node (the host's clock also counts its queueing)
    wall_s: float | None = None
    # a scheduled run: the scheduler's final word on the job (results.directory.SCHEDULER_STATES)
    scheduler_state: str | None = None
    started: bool = True          # False: the job ended before the workload started
    interrupted: bool = False     # dlbench itself stopped it (Ctrl-C, SIGTERM): resume reruns it

    def to_dict(self) -> dict:
        """As a node writes it for the host (node.json's `execution`)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict) -> Execution:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Backend(abc.ABC):
    """One way of executing runs. Attributes a subclass declares:

    name               as `--backend`, plan.json and run.json spell it
    summary            what a run is here, in a few words (said when `auto` falls back to it)
    enforces           keys of ENFORCEABLE this backend guarantees for every run
    supports_no_build  `--no-build` means something here: prepare() must then only find
                       an existing environment (self.build is False), never make one
    reruns_recorded_images
                       `dlbench rerun` can run a bundle's runs again on the very images
                       it recorded (for_recorded_images)
    multi_node         a run may span several machines (parallel.nodes > 1)
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    enforces: ClassVar[frozenset[str]] = frozenset()
    supports_no_build: ClassVar[bool] = False
    reruns_recorded_images: ClassVar[bool] = False
    multi_node: ClassVar[bool] = False  # runs `parallel.nodes` > 1 (a scheduler's allocation)

    build: bool = True  # False under --no-build (only where supports_no_build)
    nvml: Any = None    # pynvml, imported when first needed; a test's stand-in where no GPU is

    # -- choosing and opening -------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def open(cls) -> Backend:
        """A backend ready to use on this host (an engine answers, ...); raise Unavailable
        in one sentence when it cannot be used here."""

    @classmethod
    def for_recorded_images(cls, image_ids: dict[str, str], tags: dict[str, str | None]) -> Backend:
        """`dlbench rerun`: a backend that runs each framework/flavour on the image ID the
        bundle recorded (image_ids, tags: "framework/flavour" -> ID / tag), never on what a
        tag points at today. One-line DlbenchError when this host lacks one of them."""
        raise DlbenchError(f"the {cls.name} backend cannot rerun recorded images")

    # -- before any run ---------------------------------------------------------
    @abc.abstractmethod
    def preflight(self, suite: Suite) -> None:
        """Fail early, in one sentence, when the suite cannot run here (e.g. no GPU)."""

    def check_parallel(self, suite: Suite) -> None:
        """Runs over several nodes need a backend that has nodes: one line before any run."""
        wide = next((run for run in suite.runs if run.nodes > 1), None)
        if wide is not None and not self.multi_node:
            raise DlbenchError(f"run {wide.run_id}: parallel.nodes is {wide.nodes}; the {self.name} "
                               "backend runs on this host only: use --backend slurm, or nodes: 1")

    def check_results_location(self, root: Path) -> None:  # noqa: B027 - most have nothing to check
        """Preflight, once the results root is known: one line when the runs could not
        write there (a cluster's nodes that do not share it)."""

    def system_info(self) -> dict:
        """system.json: the host the suite runs on, as this backend sees it."""
        return sysinfo.collect()

    @abc.abstractmethod
    def prepare(self, framework: str, flavour: str, progress: Callable[[str], None]) -> dict:
        """Build or reuse the environment (image / venv) of framework/flavour; return its
        description (images.json; its kind/tag/id/digest/lock_sha256/path go into each
        run.json). A DlbenchError fails this environment's runs, not the suite."""

    def remove_leftovers(self, results_path: Path) -> list[str]:
        """Before a resume: stop what an earlier, interrupted attempt left running for these
        results; return what was removed, in words ("container NAME")."""
        return []

    @abc.abstractmethod
    def dataset_path(self, run: PlannedRun, host_dir: str) -> str:
        """The dataset directory as the workload sees it."""

    def recorded_resources(self, run: PlannedRun) -> dict:
        """run.json's resources: the limits asked for, marked "enforced": false when this
        backend does not enforce them all."""
        resources = {k: v for k, v in run.resources.items() if v is not None}
        if any(key not in self.enforces for key in resources):
            resources["enforced"] = False
        return resources


class DirectBackend(Backend):
    """Runs one run at a time on this host, and waits for it (docker, local)."""

    # -- one run ----------------------------------------------------------------
    @abc.abstractmethod
    def execute(self, run: PlannedRun, run_dir: RunDir, host_data_dir: str | None,
                environment: dict, on_event: Callable[[dict], None]) -> Execution:
        """Run the workload on run_dir/spec.json (already written) until it ends, its
        timeout passes or interrupt() is called. Its output goes to run_dir/output.log
        and each `@dlbench` event line to on_event (OutputSink does both); the host
        monitor samples it meanwhile (monitor_run). host_data_dir: None for synthetic
        data. A DlbenchError means no later run can start either (the engine is gone)."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Stop whatever is running now (Ctrl-C, SIGTERM)."""

    # -- the host monitor's hook ------------------------------------------------
    @abc.abstractmethod
    def host_sampler(self, started: Any) -> monitor.HostSampler:
        """What samples CPU % and memory of a run this backend started; `started` is what
        execute() hands to monitor_run (a container, a process ID, ...)."""

    def monitor_run(self, run: PlannedRun, run_dir: RunDir, started: Any) -> monitor.Monitor:
        """The host-side monitor of one run (runs/<id>/monitor.jsonl), not yet started: it
        samples the run's own GPUs only (none for a cpu run)."""
        gpus = run.gpus if run.spec["device"] == "gpu" else []
        return monitor.Monitor(lambda: self.host_sampler(started), run_dir.file(monitor.FILENAME),
                               run.monitor_interval, gpus=gpus, nvml=self.nvml)

    def recorded_gpus(self, run: PlannedRun, mon: monitor.Monitor) -> dict:
        """run.json's `gpus` (a started monitor resolved them): asked for, and which GPUs
        those are by NVML index and UUID; "enforced": false where the run could see others."""
        record = mon.gpus_used(run.gpus)
        if "gpus" not in self.enforces:
            record["enforced"] = False
        return record

    def check_gpus(self, suite: Suite) -> None:
        """Preflight: each GPU a run's `gpus` names is one NVML knows here (where NVML
        answers; the engine or driver speaks for itself otherwise)."""
        selections = {tuple(run.gpus) for run in suite.runs if run.gpus and run.spec["device"] == "gpu"}
        for selection in sorted(selections, key=str):
            sampler = monitor.GpuSampler(self.nvml, list(selection))
            missing = sampler.missing() if sampler.available else []
            sampler.close()
            if missing:
                raise DlbenchError(f"{suite.path}: gpus: {missing[0]!r} is not a GPU of this host "
                                   "(nvidia-smi -L lists them, numbered as NVML and dlbench number them)")
        # a parallel GPU run takes one GPU per worker: every GPU of the host when it lists none
        wide = next((run for run in suite.runs if run.spec["device"] == "gpu" and not run.gpus
                     and run.workers_per_node > 1), None)
        if wide is not None:
            sampler = monitor.GpuSampler(self.nvml, None)
            count = len(sampler.devices) if sampler.available else None
            sampler.close()
            if count is not None and wide.workers_per_node > count:
                raise DlbenchError(f"{suite.path}: run {wide.run_id}: parallel.workers: {wide.workers_per_node} "
                                   f"workers but this host has {count} GPU(s); one worker per GPU")


@dataclass(frozen=True)
class Submission:
    """What a job needs of one run, besides its spec.json: written by the host, read on
    the node. host_data_dir: None for synthetic data."""
    run: PlannedRun
    environment: dict
    host_data_dir: str | None


@dataclass
class JobStatus:
    """One run's job as the scheduler sees it now (`dlbench status`)."""
    job_id: str
    state: str                 # the scheduler's own word: PENDING, RUNNING, COMPLETED, ...
    node: str | None = None
    detail: str | None = None  # why it waits, how long it has run


class ScheduledBackend(Backend):
    """Hands each run to a cluster scheduler as a job; the jobs run on its nodes and each
    writes only its own run directory (spec.json in, metrics.json, output.log,
    monitor.jsonl and the node's record out); the host follows them and gathers. Two
    dlbench processes never submit one run twice: jobs are recorded under the results
    directory's lock, and a resume follows a recorded job instead of submitting anew."""

    detach: bool = False   # --detach: submit, record the jobs and return

    @classmethod
    @abc.abstractmethod
    def observer(cls) -> ScheduledBackend:
        """A backend that only asks the scheduler about jobs (`dlbench status`): it needs
        the scheduler's commands, nothing the runs would."""

    @abc.abstractmethod
    def submit(self, results_path: Path, submissions: list[Submission],
               say: Callable[[str], None]) -> None:
        """Submit one job per run and record each (its job ID) before returning."""

    @abc.abstractmethod
    def recorded_jobs(self, results_path: Path) -> set[str]:
        """The runs that have a job recorded under these results (submitted earlier)."""

    @abc.abstractmethod
    def follow(self, results_path: Path, run_ids: set[str], say: Callable[[str], None],
               give_up_after: float | None = None) -> Iterator[list[tuple[str, Execution]]]:
        """After each look at the scheduler (no more often than it likes), yield the runs
        whose jobs have ended as (run ID, what its job did); until run_ids is empty (the
        caller removes each run it was given and may add runs it submits meanwhile) or
        give_up_after seconds have passed."""

    @abc.abstractmethod
    def cancel(self, results_path: Path, run_ids: list[str]) -> list[str]:
        """Cancel these runs' jobs (Ctrl-C, SIGTERM); they are then recorded as interrupted.
        Returns the job IDs cancelled."""

    @abc.abstractmethod
    def status(self, results_path: Path, run_ids: list[str]) -> dict[str, JobStatus]:
        """The scheduler's view of these runs' jobs, for those that have one."""


def observed(on_event: Callable[[dict], None], mon: monitor.Monitor) -> Callable[[dict], None]:
    """on_event, with the monitor seeing each event first (timed epochs' edges)."""
    def both(event: dict) -> None:
        mon.observe(event)
        on_event(event)
    return both


# -- the CUDA compute cache: PTX compiled for this GPU at first use, kept between runs ----

def cuda_cache_dir(key: str) -> Path:
    """The host directory one image (or venv) keeps as CUDA_CACHE_PATH; keyed by its id as
    the compile cache is, so a rebuilt image never reads another's kernels."""
    return cache_dir() / "cuda" / key


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under path (links not followed; 0 when absent)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def cuda_cache_record(path: Path, bytes_before: int) -> dict:
    """run.json's `cuda_cache`: a cache that grew means the driver compiled PTX for this
    GPU during the run (a first run of an image on an architecture it ships no code for)."""
    after = tree_bytes(path)
    return {"path": str(path), "bytes_before": bytes_before, "bytes_after": after,
            "ptx_compiled": after > bytes_before}


class OutputSink:
    """Splits a byte stream into lines, keeps them all in output.log and hands
    the harness's `@dlbench {...}` event lines to a callback."""

    def __init__(self, log_path, on_event: Callable[[dict], None]):
        self.log = open(log_path, "ab")
        self.on_event = on_event
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        self.log.write(chunk)
        self.log.flush()
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._handle(line)

    def _handle(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith(EVENT_PREFIX):
            try:
                self.on_event(json.loads(line[len(EVENT_PREFIX):]))
            except json.JSONDecodeError:
                pass  # a garbled progress line is not worth failing a run for

    def close(self) -> None:
        if self._pending:
            self._handle(self._pending)
            self._pending = b""
        self.log.close()
