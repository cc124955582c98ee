"""Runs a planned suite on a backend and fills a fresh results directory.

Checks that can fail fast (datasets, GPU access) run before anything is created;
each run's outcome is written as soon as it ends, so an interruption keeps them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from workloads.harness import write_json_atomic

from . import data, report, sysinfo
from .backends.base import Backend, Execution
from .errors import DlbenchError
from .results import ResultsDir, classify, now_iso, read_metrics, schema_error, summarize
from .suite import PlannedRun, Suite


def required_datasets(suite: Suite) -> dict[str, str]:
    """Each dataset the suite uses -> its host directory (one-line error if missing)."""
    needed: dict[str, set[str]] = {}
    for run in suite.runs:
        needed.setdefault(run.dataset, {"test"}).add(run.spec["dataset"]["train_split"])
    return {name: str(data.require(name, splits=tuple(sorted(splits))))
            for name, splits in needed.items()}


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
    data_dirs = required_datasets(suite)
    backend.preflight(suite)
    results = ResultsDir.create(results_root, suite.name)
    say(f"Results: {results.path}")
    results.write_text("suite.yaml", suite.text)
    results.write_json("plan.json", {"suite": suite.name, "backend": backend.name,
                                     "runs": [run.to_dict() for run in suite.runs]})
    results.write_json("system.json", sysinfo.collect(getattr(backend, "client", None)))

    environments = _prepare_environments(suite, backend, say)
    results.write_json("images.json", {key: env for key, env in environments.items()
                                       if "error" not in env})
    try:
        for index, run in enumerate(suite.runs, start=1):
            say(f"[{index}/{len(suite.runs)}] {run.run_id}: {run.framework}/{run.api} "
                f"on {run.spec['device']} ({backend.name})")
            outcome = _run_one(run, backend, results, data_dirs[run.dataset],
                               environments[f"{run.framework}/{run.flavour}"], say)
            say(f"    -> {outcome}")
    except KeyboardInterrupt:
        backend.interrupt()
        say("Interrupted: finished runs are kept; the report covers what ran.")
        _finish(results)
        raise
    _finish(results)
    return results


def _prepare_environments(suite: Suite, backend: Backend, say) -> dict[str, dict]:
    environments: dict[str, dict] = {}
    for run in suite.runs:
        key = f"{run.framework}/{run.flavour}"
        if key in environments:
            continue
        say(f"Preparing {key} ({backend.name})")
        started = time.monotonic()
        try:
            environments[key] = backend.prepare(run.framework, run.flavour,
                                                lambda line: say(f"    {line}"))
            say(f"    ready in {time.monotonic() - started:.0f} s")
        except DlbenchError as exc:  # one broken environment must not stop the others
            environments[key] = {"error": str(exc)}
            say(f"    failed: {exc}")
    return environments


def _run_one(run: PlannedRun, backend: Backend, results: ResultsDir, host_data_dir: str,
             environment: dict, say) -> str:
    run_dir = results.run_dir(run.run_id)
    spec = run.spec_for(backend.dataset_path(run, host_data_dir))
    problem = schema_error("spec", spec)
    if problem:  # the planner produced it: a bug here, not bad input
        raise AssertionError(f"generated spec for {run.run_id} is invalid: {problem}")
    write_json_atomic(str(run_dir.file("spec.json")), spec)
    started_at, started = now_iso(), time.monotonic()
    if "error" in environment:
        execution = Execution(None, message=f"environment not available: {environment['error']}")
    else:
        def on_event(event):
            line = format_event(event)
            if line:
                say(line)
        execution = backend.execute(run, run_dir, host_data_dir, environment, on_event)
    metrics, metrics_problem = read_metrics(run_dir.file("metrics.json"))
    if execution.exit_code is None and execution.message:
        outcome, message = "error", execution.message
    else:
        outcome, message = classify(execution.exit_code, metrics, metrics_problem,
                                    oom_killed=execution.oom_killed,
                                    timed_out=execution.timed_out)
    env_summary = {k: environment.get(k) for k in ("kind", "tag", "id", "digest", "lock_sha256", "path")
                   if k in environment}
    run_dir.write_record({
        "run_id": run.run_id, "outcome": outcome, "message": message, "backend": backend.name,
        "exit_code": execution.exit_code, "started_at": started_at, "finished_at": now_iso(),
        "wall_s": round(time.monotonic() - started, 3), "environment": env_summary,
        "container": execution.container, "resources": execution.resources,
        "metrics_valid": metrics is not None,
    })
    return outcome if not message else f"{outcome}: {message}"


def _finish(results: ResultsDir) -> None:
    rows = report.load(results.path)
    results.write_json("summary.json", summarize(rows["runs"]))
    results.write_text("report.html", report.render(rows))
