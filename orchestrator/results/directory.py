"""The results directory: layout, schema validation, run outcomes, reading the runs back.
(summary.json is made in orchestrator.analysis.summary.)

results/<timestamp>-<suite>/
  suite.yaml  plan.json  system.json  images.json  summary.json  report.html
  runs/<run_id>/spec.json  metrics.json  run.json  output.log
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from contract.jsonio import write_json_atomic
from orchestrator.errors import DlbenchError
from orchestrator.paths import ORCHESTRATOR_SCHEMA_DIR, SCHEMA_DIR
from orchestrator.results import nofollow

RUN_SCHEMA_VERSION = 1
# unsupported: the framework cannot do what the run asks (a precision policy, ...);
# unavailable: this host cannot run it (GPU architecture, driver); both final, not retried
OUTCOMES = ("ok", "failed", "oom", "killed", "timeout", "error", "unsupported", "unavailable")
MIN_FREE_BYTES = 64 * 2**20  # a suite writes a few MB; less free than this means trouble ahead


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _no_backend_registry() -> list[str]:
    return []


# The names plan.json's and run.json's `backend` may take are those of the backend registry
# (orchestrator.execution.backends, a layer above this one), which installs itself here
# when it loads; a process that never loads it (a bare bundle.verify) accepts any string.
registered_backends = _no_backend_registry


def _validator(path: Path) -> jsonschema.Draft202012Validator:
    with open(path, encoding="utf-8") as fh:
        schema = json.load(fh)
    backends = registered_backends()
    if backends and "backend" in schema.get("properties", {}):
        schema["properties"]["backend"] = {"enum": backends}
    return jsonschema.Draft202012Validator(schema)


def _orchestrator_validator(kind: str) -> jsonschema.Draft202012Validator:
    return _validator(ORCHESTRATOR_SCHEMA_DIR / f"{kind}.schema.json")


# Built afresh on each use, so a backend registered meanwhile is known.
VALIDATORS = {
    "spec": lambda: _validator(SCHEMA_DIR / "spec.schema.json"),
    "metrics": lambda: _validator(SCHEMA_DIR / "metrics.schema.json"),
    "run": lambda: _orchestrator_validator("run"),
    # bundle-level documents, checked by `dlbench verify`
    "plan": lambda: _orchestrator_validator("plan"),
    "system": lambda: _orchestrator_validator("system"),
    "images": lambda: _orchestrator_validator("images"),
    "summary": lambda: _orchestrator_validator("summary"),
}


def schema_error(kind: str, document) -> str | None:
    """First schema violation of a document as 'field: message', or None when valid."""
    errors = sorted(VALIDATORS[kind]().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return None
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"{where}: {err.message}"


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """(metrics, None) when present and schema-valid, else (None, why not)."""
    try:
        with open(path, encoding="utf-8") as fh:
            metrics = json.load(fh)
    except FileNotFoundError:
        return None, "the workload wrote no metrics.json"
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"metrics.json is not valid JSON ({exc})"
    except UnicodeDecodeError as exc:
        return None, f"metrics.json is not valid JSON (not UTF-8: {exc})"
    except RecursionError:
        return None, "metrics.json is not valid JSON (nested too deeply to parse)"
    problem = schema_error("metrics", metrics)
    if problem:
        return None, f"metrics.json does not match the schema: {problem}"
    return metrics, None


# A cluster scheduler's final job states that decide the outcome whatever the workload wrote
# (any other state, COMPLETED or FAILED, leaves it to what the job recorded). `error` is the
# orchestrator's trouble, not the framework's: `dlbench run --resume` submits the run again.
SCHEDULER_STATES = {
    "TIMEOUT": ("timeout", "the job reached its Slurm time limit and was stopped"),
    "DEADLINE": ("timeout", "the job reached its Slurm deadline and was stopped"),
    "OUT_OF_MEMORY": ("oom", "the scheduler stopped the job: out of memory (its --mem)"),
    "CANCELLED": ("killed", "the job was cancelled (scancel) while it ran"),
    "NODE_FAIL": ("error", "its node failed or was set down while the job ran"),
    "PREEMPTED": ("error", "the job was preempted by another job"),
    "BOOT_FAIL": ("error", "its node failed to boot"),
}


def classify(exit_code: int | None, metrics: dict | None, metrics_problem: str | None,
             *, oom_killed: bool = False, timed_out: bool = False,
             scheduler_state: str | None = None) -> tuple[str, str | None]:
    """Turn what the backend saw into one outcome and a message for the report."""
    if scheduler_state in SCHEDULER_STATES:
        return SCHEDULER_STATES[scheduler_state]
    if timed_out:
        return "timeout", "the run exceeded its timeout and was stopped"
    if oom_killed:
        return "oom", "killed by the kernel's out-of-memory killer (memory limit reached)"
    if metrics is not None and metrics["status"] == "unsupported":
        return "unsupported", metrics.get("error") or "the framework cannot run this configuration"
    if metrics is not None and metrics["status"] == "oom":
        return "oom", metrics.get("error") or "the framework reported out of memory"
    if exit_code in (137, -9) and (metrics is None or metrics["status"] != "ok"):
        return "killed", f"the workload was killed (exit code {exit_code})"
    if metrics is None:
        return "failed", f"{metrics_problem} (exit code {exit_code})"
    if metrics["status"] != "ok" or exit_code != 0:
        return "failed", metrics.get("error") or f"exit code {exit_code}"
    return "ok", None


@dataclass
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def write_record(self, record: dict) -> None:
        record = {"schema_version": RUN_SCHEMA_VERSION, **record}
        problem = schema_error("run", record)
        if problem:  # our own bug, not the user's: fail loudly
            raise AssertionError(f"run.json for {self.run_id} invalid: {problem}")
        write_json_atomic(str(self.file("run.json")), record)


class ResultsDir:
    """A suite run's directory. Created fresh; existing results are never touched."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path, suite_name: str) -> ResultsDir:
        check_free_space(root)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for attempt in range(100):
                name = f"{stamp}-{suite_name}" + (f"-{attempt}" if attempt else "")
                try:
                    (root / name).mkdir()
                    break
                except FileExistsError:
                    continue
            probe = root / name / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise DlbenchError(f"{root}: results directory not writable ({exc.strerror}); "
                               "set DLBENCH_RESULTS or --results to a writable directory") from None
        (root / name / "runs").mkdir()
        return cls(root / name)

    def run_dir(self, run_id: str) -> RunDir:
        path = self.path / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return RunDir(path)

    def write_json(self, name: str, payload) -> None:
        write_json_atomic(str(self.path / name), payload)

    def write_text(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)


def check_free_space(path: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Refuse to start on a (nearly) full filesystem rather than fail half-way."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return  # not a directory we can measure: creating it will say what is wrong
    if free < minimum:
        raise DlbenchError(f"{path}: only {free / 2**20:.1f} MiB free for results (at least "
                           f"{minimum // 2**20} MiB needed); free some space or set "
                           "DLBENCH_RESULTS / --results to another filesystem")


def load_runs(results: Path) -> list[dict]:
    """Every run of a results directory: its spec, run record and metrics (when valid).
    A run directory, or a file of one, that is a link, FIFO or device is refused in one
    line: never followed, never read (orchestrator.results.nofollow)."""
    results = Path(results)
    runs_dir = results / "runs"
    if runs_dir.is_symlink():
        raise DlbenchError(nofollow.strange(str(runs_dir), runs_dir.lstat().st_mode))
    if not runs_dir.is_dir():
        raise DlbenchError(f"{results}: not a dlbench results directory (no runs/ inside)")
    with os.scandir(runs_dir) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    rows = []
    for entry in listed:
        if entry.is_dir(follow_symlinks=False):
            rows.append(_load_run(results, entry.name))
        elif not entry.is_file(follow_symlinks=False):  # a link to a directory passes for a run
            raise DlbenchError(nofollow.strange(f"{runs_dir}/{entry.name}",
                                                entry.stat(follow_symlinks=False).st_mode))
    return rows


def _load_run(results: Path, run_id: str) -> dict:
    rel = f"runs/{run_id}"
    try:
        row = {"run_id": run_id, "spec": nofollow.read_json_or_none(results, f"{rel}/spec.json"),
               "record": nofollow.read_json_or_none(results, f"{rel}/run.json")}
        try:
            metrics = json.loads(nofollow.read_bytes(results, f"{rel}/metrics.json").decode("utf-8"))
        except FileNotFoundError:
            row["metrics"], row["metrics_problem"] = None, "the workload wrote no metrics.json"
            return row
        except ValueError as exc:  # not UTF-8, not JSON
            row["metrics"], row["metrics_problem"] = None, f"metrics.json is not valid JSON ({exc})"
            return row
    except nofollow.RefusedEntry as exc:
        raise DlbenchError(f"{results}/{exc}") from None
    problem = schema_error("metrics", metrics)
    row["metrics"], row["metrics_problem"] = (None, f"metrics.json does not match the schema: {problem}") \
        if problem else (metrics, None)
    return row
