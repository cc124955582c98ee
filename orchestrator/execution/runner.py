"""Runs a planned suite on a backend and fills a fresh results directory.

Checks that can fail fast (datasets and their checksums, GPU access, free space) run
before anything is created; the directory is locked against a second writer from its
creation on (orchestrator.results.lock); each run's outcome is written as soon as it ends,
so an interruption (Ctrl-C, SIGTERM, a lost engine, a full disk) keeps them, and
`dlbench run --resume` (resume.py) finishes the rest. A direct backend's runs run here one
after the other; a scheduled backend's are submitted as jobs and followed (scheduled.py).
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from contract.jsonio import write_json_atomic
from contract.registry import precision_problem
from orchestrator import report
from orchestrator.analysis.summary import summarize
from orchestrator.datasets import provenance
from orchestrator.errors import DlbenchError, EnvironmentUnavailable
from orchestrator.execution import monitor_summary, sysinfo
from orchestrator.execution.backends.base import Backend, DirectBackend, Execution, ScheduledBackend
from orchestrator.images import gpu_compat
from orchestrator.plan.suite import PlannedRun, Suite
from orchestrator.results import bundle, lock, nofollow
from orchestrator.results.directory import (
    SCHEDULER_STATES,
    ResultsDir,
    RunDir,
    classify,
    now_iso,
    read_metrics,
    schema_error,
)


def required_datasets(suite: Suite) -> dict[str, provenance.Provenance]:
    """Each dataset the suite uses -> its host directory and the files runs open there,
    each checked against the registry's checksums (one-line error if missing or wrong)."""
    needed: dict[str, set[str]] = {}
    for run in suite.runs:
        if not run.synthetic:  # generated in the workload: nothing to prepare or mount
            needed.setdefault(run.dataset, set()).update(_splits(run))
    return {name: provenance.require_verified(name, splits=tuple(sorted(splits)))
            for name, splits in needed.items()}


def _splits(run: PlannedRun) -> set[str]:
    """The splits a run reads: it always tests on `test`."""
    return {"test", run.spec["dataset"]["train_split"]}


def _data_record(run: PlannedRun, data: provenance.Provenance | None) -> dict | None:
    """run.json's `data`: what the run trained and tested on, file by file."""
    if run.synthetic:
        return provenance.synthetic_record(run.dataset)
    return data.record(_splits(run)) if data is not None else None


def format_event(event: dict) -> str | None:
    kind = event.get("event")
    if kind == "warmup":
        return f"    warm-up: first step {event['first_step_s']:.2f} s, all warm-up {event['warmup_s']:.2f} s"
    if kind == "epoch":
        test = event.get("test_accuracy")
        test_txt = f"  test acc {test:.4f}" if test is not None else ""
        return (f"    epoch {event['epoch']}/{event['epochs']}  {event['train_s']:.1f} s  "
                f"{event['images_per_s']:.0f} img/s  loss {event['loss']:.4f}  "
                f"acc {event['accuracy']:.4f}{test_txt}")
    if kind == "failed":
        return f"    {event.get('status')}: {event.get('error')}"
    return None


def run_suite(suite: Suite, backend: Backend, results_root: Path,
              say: Callable[[str], None] = print) -> ResultsDir:
    data = required_datasets(suite)
    backend.check_parallel(suite)
    backend.preflight(suite)
    backend.check_results_location(results_root)
    results = ResultsDir.create(results_root, suite.name)
    with lock.hold(results.path, say):  # from its creation to its seal: one writer
        say(f"Results: {results.path}")
        results.write_text("suite.yaml", suite.text)
        results.write_json("plan.json", {"suite": suite.name, "backend": backend.name,
                                         "statistics": {"cv_threshold": suite.cv_threshold},
                                         **({"slurm": suite.slurm} if suite.slurm else {}),
                                         "runs": [run.to_dict() for run in suite.runs]})
        results.write_json("system.json", backend.system_info())
        execute_runs(suite, backend, results, data, say)
    return results


def execute_runs(suite: Suite, backend: Backend, results: ResultsDir,
                 data: dict[str, provenance.Provenance], say: Callable[[str], None],
                 only: set[str] | None = None, adopted: set[str] | None = None) -> None:
    """Run the suite's runs (those in `only`, when given) into `results`, then render the
    summary and report. Whatever stops it early leaves every finished run intact.
    `data`: required_datasets(suite); `adopted`: runs whose scheduler jobs an earlier
    attempt submitted, followed rather than submitted again (resume)."""
    with lock.hold(results.path, say):  # its callers hold it already; anyone else must too
        _execute_runs(suite, backend, results, data, say, only, adopted or set())


def _execute_runs(suite: Suite, backend: Backend, results: ResultsDir,
                  data: dict[str, provenance.Provenance], say: Callable[[str], None],
                  only: set[str] | None, adopted: set[str]) -> None:
    todo = [run for run in suite.runs if only is None or run.run_id in only]
    resume_hint = f"resume with: dlbench run --resume {results.path}"
    try:
        with lock.sigterm_as_interrupt():
            # a run its framework cannot do needs no environment: it is recorded, never started
            environments = _prepare_environments([r for r in todo if not unsupported(r)], backend, say)
            _record_environments(results, environments)
            if isinstance(backend, ScheduledBackend):
                from orchestrator.execution import scheduled

                attempts = [RunAttempt(run, backend, results, _mounted(data, run),
                                       environments.get(f"{run.framework}/{run.flavour}", {}),
                                       data_record=_data_record(run, data.get(run.dataset)))
                            for run in todo]
                if not scheduled.run_jobs(suite, backend, results, attempts, adopted, say):
                    return  # --detach: the jobs write their runs; --resume gathers and seals
            else:
                assert isinstance(backend, DirectBackend)
                _run_each(suite, backend, results, todo, data, environments, say)
    except KeyboardInterrupt:
        if isinstance(backend, DirectBackend):
            backend.interrupt()
        say(f"Interrupted: finished runs are kept; {resume_hint}")
        _finish(results, say)
        raise
    except DlbenchError as exc:  # the backend lost its engine: no later run could start
        _finish(results, say)
        raise DlbenchError(f"{exc}; finished runs are kept, {resume_hint}") from None
    except OSError as exc:  # the results filesystem filled up or went away
        if exc.errno is None:  # not the filesystem (e.g. an HTTP error a backend let through)
            raise
        raise DlbenchError(f"{results.path}: cannot write results ({exc.strerror or exc}); "
                           f"finished runs are kept, free space and {resume_hint}") from None
    _finish(results, say)


def _run_each(suite: Suite, backend: DirectBackend, results: ResultsDir, todo: list[PlannedRun],
              data: dict[str, provenance.Provenance], environments: dict[str, dict],
              say: Callable[[str], None]) -> None:
    for run in todo:
        say(f"[{suite.runs.index(run) + 1}/{len(suite.runs)}] {run.run_id}: "
            f"{run.framework}/{run.api} on {run.spec['device']} ({backend.name})")
        outcome = _run_one(run, backend, results, _mounted(data, run),
                           environments.get(f"{run.framework}/{run.flavour}", {}), say,
                           data_record=_data_record(run, data.get(run.dataset)))
        say(f"    -> {outcome}")


def _mounted(data: dict[str, provenance.Provenance], run: PlannedRun) -> str | None:
    mounted = data.get(run.dataset)
    return str(mounted.directory) if mounted and not run.synthetic else None


def unsupported(run: PlannedRun) -> str | None:
    """Why the run's framework cannot do what it asks (contract.registry), before it starts."""
    problem = precision_problem(run.framework, run.api, run.spec["precision"], run.spec["device"])
    return f"precision {run.spec['precision']} on {run.spec['device']}: {problem}" if problem else None


def refuse_unrunnable(framework: str, flavour: str, runs: list[PlannedRun], host: list[dict]) -> None:
    """Before anything is built: an image whose CUDA needs a newer driver, or whose kernels
    do not cover the GPUs its runs will use (of `host`: sysinfo.gpus()), raises
    EnvironmentUnavailable."""
    if flavour == "cpu":
        return
    wanted = {str(g) for r in runs for g in (r.gpus or [])}
    used = host if any(not r.gpus for r in runs) else \
        [g for g in host if str(g.get("index")) in wanted or g.get("uuid") in wanted]
    problem = gpu_compat.environment_problem(framework, flavour, used)
    if problem:
        raise EnvironmentUnavailable(problem)


def _record_environments(results: ResultsDir, environments: dict[str, dict]) -> None:
    """images.json: the environments prepared now, over those an earlier attempt recorded."""
    previous = results.path / "images.json"
    recorded = json.loads(previous.read_text(encoding="utf-8")) if previous.exists() else {}
    recorded.update({key: env for key, env in environments.items()
                     if "error" not in env and "unavailable" not in env})
    results.write_json("images.json", recorded)


def _prepare_environments(runs: list[PlannedRun], backend: Backend, say) -> dict[str, dict]:
    environments: dict[str, dict] = {}
    # NVML once; a scheduler's runs use its nodes' GPUs, which this host cannot judge
    here = isinstance(backend, DirectBackend) and any(r.flavour != "cpu" for r in runs)
    host_gpus = sysinfo.gpus() if here else []
    for run in runs:
        key = f"{run.framework}/{run.flavour}"
        if key in environments:
            continue
        say(f"Preparing {key} ({backend.name})")
        started = time.monotonic()
        try:
            refuse_unrunnable(run.framework, run.flavour, [r for r in runs if r.flavour == run.flavour
                                                           and r.framework == run.framework], host_gpus)
            environments[key] = backend.prepare(run.framework, run.flavour,
                                                lambda line: say(f"    {line}"))
            say(f"    ready in {time.monotonic() - started:.0f} s")
        except EnvironmentUnavailable as exc:  # final: resume does not retry it
            environments[key] = {"unavailable": str(exc)}
            say(f"    unavailable: {exc}")
        except DlbenchError as exc:  # one broken environment must not stop the others
            environments[key] = {"error": str(exc)}
            say(f"    failed: {exc}")
    return environments


class RunAttempt:
    """One attempt at a run: spec.json written at the start, run.json at the end (finish or
    conclude). host_data_dir: None for a synthetic run (nothing to mount); data_record: the
    files it trains on, checked (run.json's `data`)."""

    def __init__(self, run: PlannedRun, backend: Backend, results: ResultsDir,
                 host_data_dir: str | None, environment: dict, data_record: dict | None = None):
        self.run, self.environment, self.host_data_dir = run, environment, host_data_dir
        self.backend, self.results, self.data_record = backend, results, data_record
        self.run_dir = results.run_dir(run.run_id)
        spec = run.spec_for(None if run.synthetic or host_data_dir is None
                            else backend.dataset_path(run, host_data_dir))
        problem = schema_error("spec", spec)
        if problem:  # the planner produced it: a bug here, not bad input
            raise AssertionError(f"generated spec for {run.run_id} is invalid: {problem}")
        write_json_atomic(str(self.run_dir.file("spec.json")), spec)
        self.record = {"run_id": run.run_id, "backend": backend.name, "started_at": now_iso(),
                       "batch_size": run.spec["batch_size"],
                       "environment": {k: environment.get(k) for k in
                                       ("kind", "tag", "id", "digest", "lock_sha256", "path")
                                       if k in environment}}
        if data_record is not None:
            self.record["data"] = data_record
        self.started = time.monotonic()

    def again(self) -> RunAttempt:
        """A fresh attempt at the same run, from an empty run directory."""
        shutil.rmtree(self.run_dir.path, ignore_errors=True)
        return RunAttempt(self.run, self.backend, self.results, self.host_data_dir,
                          self.environment, self.data_record)

    def refusal(self) -> tuple[str, str] | None:
        """(outcome, message) when the run must not start at all."""
        reason = unsupported(self.run)
        if reason:  # never run as fp32 under another label
            return "unsupported", reason
        if "unavailable" in self.environment:  # this host cannot run the image (GPU, driver)
            return "unavailable", self.environment["unavailable"]
        if "error" in self.environment:
            return "error", f"environment not available: {self.environment['error']}"
        return None

    def finish(self, outcome: str, message: str | None, execution: Execution | None = None,
               metrics_valid: bool = False) -> str:
        execution = execution or Execution(None)
        wall = execution.wall_s if execution.wall_s is not None else time.monotonic() - self.started
        self.run_dir.write_record({
            **self.record, **execution.recorded, "outcome": outcome, "message": message,
            "exit_code": execution.exit_code, "finished_at": now_iso(), "wall_s": round(wall, 3),
            "container": execution.container, "resources": execution.resources,
            "metrics_valid": metrics_valid,
            "monitor": monitor_summary.run_summary(self.run_dir.path, self.run.monitor_interval),
        })
        return outcome if not message else f"{outcome}: {message}"

    def conclude(self, execution: Execution) -> str:
        """run.json from what the backend saw and what the run left in its directory."""
        refused = _refused_entries(self.run_dir)  # before anything in it is read
        if refused:
            return self.finish("failed", refused, execution)
        metrics, metrics_problem = read_metrics(self.run_dir.file("metrics.json"))
        outcome: str
        message: str | None
        if execution.interrupted:
            outcome, message = "error", execution.message or "interrupted"
        elif execution.scheduler_state and not execution.started:
            outcome, message = "error", execution.message or \
                f"the job ended ({execution.scheduler_state}) before the workload started"
        elif execution.exit_code is None and execution.message and \
                execution.scheduler_state not in SCHEDULER_STATES:
            outcome, message = "error", execution.message
        else:
            outcome, message = classify(execution.exit_code, metrics, metrics_problem,
                                        oom_killed=execution.oom_killed,
                                        timed_out=execution.timed_out,
                                        scheduler_state=execution.scheduler_state)
        return self.finish(outcome, message, execution, metrics_valid=metrics is not None)


def _run_one(run: PlannedRun, backend: DirectBackend, results: ResultsDir, host_data_dir: str | None,
             environment: dict, say, data_record: dict | None = None) -> str:
    attempt = RunAttempt(run, backend, results, host_data_dir, environment, data_record)
    refusal = attempt.refusal()
    if refusal:
        return attempt.finish(*refusal)

    def on_event(event):
        line = format_event(event)
        if line:
            say(line)
    try:
        execution = backend.execute(run, attempt.run_dir, host_data_dir, environment, on_event)
    except KeyboardInterrupt:  # recorded, so the run is re-run by --resume
        _refused_entries(attempt.run_dir)
        attempt.finish("error", "interrupted")
        raise
    except DlbenchError as exc:
        _refused_entries(attempt.run_dir)
        attempt.finish("error", str(exc))
        raise
    return attempt.conclude(execution)


def _refused_entries(run_dir: RunDir) -> str | None:
    """A run directory is collected only when the run left nothing but regular files and
    directories there: each link (to a host file, or a directory passing for a run), FIFO,
    socket or device is removed unread (never followed), and the message names it."""
    removed = nofollow.remove_strange(run_dir.path, prefix=f"runs/{run_dir.run_id}")
    if not removed:
        return None
    more = f" (and {len(removed) - 1} more)" if len(removed) > 1 else ""
    return f"run directory not collected: {removed[0]}{more}; removed unread"


def _finish(results: ResultsDir, say: Callable[[str], None] = print) -> None:
    context = report.load(results.path)  # the runs and every analysis of them, each made once
    results.write_json("summary.json", summarize(context["runs"], analyses=context))
    results.write_text("report.html", report.render(context))
    removed = bundle.seal(results.path)  # summary.csv + MANIFEST.sha256: always the last files written
    if removed:  # a signature of the manifest this seal replaced (a resume after signing)
        say(removed)
