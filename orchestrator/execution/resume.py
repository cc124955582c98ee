"""`dlbench run --resume RESULTS_DIR`: finish a suite that stopped early.

The plan comes from the results directory itself (plan.json, as first expanded),
never from a suite file that may have changed since. A run that reached an outcome
about the framework (ok, failed, oom, killed, timeout) is a result and is kept byte
for byte; a run with no outcome (never started, or the disk filled) or outcome
`error` (interrupted, engine lost, environment unavailable: the orchestrator's
trouble, not the framework's) starts again from an empty run directory. The
summary and report are then re-rendered. All of it under the directory's lock: a
directory another process is writing is refused before anything in it is touched.

Nothing is adopted unverified: what resume keeps (the runs with an outcome, suite.yaml,
plan.json, system.json, images.json) must verify first, against MANIFEST.sha256 when the
directory was sealed (the runner seals it even when interrupted or when the engine is
lost) or, never sealed (the disk filled, the process was killed), against its schemas; a
link, FIFO or device anywhere is refused. The manifest is removed before anything changes,
so a resume that dies unsealed leaves no stale one behind. A complete, sealed bundle is
left byte for byte.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.execution.backends.base import Backend, ScheduledBackend
from orchestrator.execution.runner import execute_runs, required_datasets
from orchestrator.plan.suite import PlannedRun, Suite
from orchestrator.results import bundle, lock, nofollow
from orchestrator.results.directory import ResultsDir, check_free_space


def load_plan(path: Path) -> tuple[Suite, str]:
    """The suite as planned when the results directory was made, and its backend's name."""
    try:
        plan = json.loads(nofollow.read_bytes(path, "plan.json"))
        text = nofollow.read_bytes(path, "suite.yaml").decode("utf-8")
        runs = [PlannedRun(**run) for run in plan["runs"]]
        name, backend, slurm = plan["suite"], plan["backend"], plan.get("slurm")
    except nofollow.RefusedEntry as exc:  # a link or FIFO: never followed, never read
        raise DlbenchError(f"{path}/{exc}; this directory cannot be resumed, run the suite afresh") from None
    except FileNotFoundError as exc:
        raise DlbenchError(f"{path}: not a dlbench results directory ({Path(exc.filename).name} "
                           "missing); give the directory `dlbench run` printed as Results:") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DlbenchError(f"{path}/plan.json: unreadable plan ({type(exc).__name__}: {exc}); "
                           "this directory cannot be resumed, run the suite afresh") from None
    return Suite(name=name, description="", path=path / "suite.yaml", text=text, runs=runs,
                 slurm=slurm), backend


def recorded_outcome(results: ResultsDir, run_id: str) -> str | None:
    try:
        record = nofollow.read_json_or_none(results.path, f"runs/{run_id}/run.json")
    except DlbenchError:  # a link or FIFO: never read; the run is re-run from an empty directory
        return None
    return record.get("outcome") if isinstance(record, dict) else None


def pending_runs(results: ResultsDir, suite: Suite) -> list[str]:
    """Runs --resume must (re)run: no outcome yet, or the orchestrator's own `error`."""
    return [run.run_id for run in suite.runs
            if recorded_outcome(results, run.run_id) in (None, "error")]


def resume_suite(results: ResultsDir, suite: Suite, backend: Backend,
                 say: Callable[[str], None] = print) -> ResultsDir:
    with lock.hold(results.path, say):  # before anything is read to decide, or removed
        pending = pending_runs(results, suite)
        if not verify_kept(results, pending, say):
            return results  # complete and sealed: nothing to do, nothing touched
        data = required_datasets(suite)
        backend.check_parallel(suite)
        backend.preflight(suite)
        backend.check_results_location(results.path.parent)
        check_free_space(results.path)
        say(f"Resuming {results.path}: {len(suite.runs) - len(pending)} run(s) kept, "
            f"{len(pending)} to run")
        # a scheduler's jobs submitted earlier (--detach, an interrupted attach): followed and
        # gathered, never submitted twice; their directories are theirs until they end
        adopted = set(pending) & backend.recorded_jobs(results.path) \
            if isinstance(backend, ScheduledBackend) else set()
        if adopted:
            say(f"    re-attaching to the jobs of {len(adopted)} run(s) submitted earlier")
        for leftover in backend.remove_leftovers(results.path):
            say(f"    removed {leftover}, left running by the interrupted attempt")
        (results.path / bundle.MANIFEST).unlink(missing_ok=True)  # unsealed while it changes
        for run_id in set(pending) - adopted:  # a fresh start: nothing of a previous attempt may be mistaken for it
            shutil.rmtree(results.path / "runs" / run_id, ignore_errors=True)
        execute_runs(suite, backend, results, data, say, only=set(pending), adopted=adopted)
    return results


def verify_kept(results: ResultsDir, pending: list[str], say: Callable[[str], None]) -> bool:
    """Refuse (one line) to adopt what does not verify; False when there is nothing to do:
    every planned run has an outcome and the bundle is sealed (it is left byte for byte)."""
    sealed = os.path.lexists(results.path / bundle.MANIFEST)
    finishing = bool(pending) or not sealed  # runs to run, or a seal to make: re-rendered
    problems = bundle.kept_problems(results.path, pending, rerendered=finishing)
    if problems:
        more = f" (and {len(problems) - 1} more: dlbench verify lists them)" if len(problems) > 1 else ""
        raise DlbenchError(f"{results.path}: cannot resume: {problems[0]}{more}; resume adopts only "
                           "files that verify, so run the suite again into a new directory "
                           "(dlbench run SUITE.yaml)")
    if not finishing:
        say(f"Nothing to resume: every run planned in {results.path} has an outcome and the bundle "
            "is sealed; it is left as it is, byte for byte")
    elif not sealed and _keeps_any_run(results, pending):
        say(f"{results.path} was never sealed: the runs kept are checked against their schemas "
            "only (there is no MANIFEST.sha256 to check them against)")
    return finishing


def _keeps_any_run(results: ResultsDir, pending: list[str]) -> bool:
    try:
        with os.scandir(results.path / "runs") as entries:  # runs/ as a link: refused above
            return any(e.is_dir(follow_symlinks=False) and e.name not in pending for e in entries)
    except OSError:
        return False
