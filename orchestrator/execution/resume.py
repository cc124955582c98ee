"""`dlbench run --resume RESULTS_DIR`: finish a suite that stopped early.

The plan comes from the results directory itself (plan.json, as first expanded),
never from a suite file that may have changed since. A run that reached an outcome
about the framework (ok, failed, oom, killed, timeout) is a result and is kept byte
for byte; a run with no outcome (never started, or the disk filled) or outcome
`error` (interrupted, engine lost, environment unavailable: the orchestrator's
trouble, not the framework's) starts again from an empty run directory. The
summary and report are then re-rendered.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.execution.backends.base import Backend
from orchestrator.execution.runner import execute_runs, required_datasets
from orchestrator.fileio import read_json_or_none
from orchestrator.plan.suite import PlannedRun, Suite
from orchestrator.results.directory import ResultsDir, check_free_space


def load_plan(path: Path) -> tuple[Suite, str]:
    """The suite as planned when the results directory was made, and its backend's name."""
    try:
        plan = json.loads((path / "plan.json").read_text(encoding="utf-8"))
        text = (path / "suite.yaml").read_text(encoding="utf-8")
        runs = [PlannedRun(**run) for run in plan["runs"]]
        name, backend = plan["suite"], plan["backend"]
    except FileNotFoundError as exc:
        raise DlbenchError(f"{path}: not a dlbench results directory ({Path(exc.filename).name} "
                           "missing); give the directory `dlbench run` printed as Results:") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DlbenchError(f"{path}/plan.json: unreadable plan ({type(exc).__name__}: {exc}); "
                           "this directory cannot be resumed, run the suite afresh") from None
    return Suite(name=name, description="", path=path / "suite.yaml", text=text, runs=runs), backend


def recorded_outcome(results: ResultsDir, run_id: str) -> str | None:
    record = read_json_or_none(results.path / "runs" / run_id / "run.json")
    return record.get("outcome") if isinstance(record, dict) else None


def finished_ok(results: ResultsDir, run_id: str) -> bool:
    return recorded_outcome(results, run_id) == "ok"


def pending_runs(results: ResultsDir, suite: Suite) -> list[str]:
    """Runs --resume must (re)run: no outcome yet, or the orchestrator's own `error`."""
    return [run.run_id for run in suite.runs
            if recorded_outcome(results, run.run_id) in (None, "error")]


def resume_suite(results: ResultsDir, suite: Suite, backend: Backend,
                 say: Callable[[str], None] = print) -> ResultsDir:
    pending = pending_runs(results, suite)
    data_dirs = required_datasets(suite)
    backend.preflight(suite)
    check_free_space(results.path)
    say(f"Resuming {results.path}: {len(suite.runs) - len(pending)} run(s) kept, "
        f"{len(pending)} to run")
    for leftover in backend.remove_leftovers(results.path):
        say(f"    removed {leftover}, left running by the interrupted attempt")
    for run_id in pending:  # a fresh start: nothing of a previous attempt may be mistaken for it
        shutil.rmtree(results.path / "runs" / run_id, ignore_errors=True)
    execute_runs(suite, backend, results, data_dirs, say, only=set(pending))
    return results
