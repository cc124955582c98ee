"""Whether a bundle's files agree with each other: what hashes alone cannot show.

`bundle.verify` proves each file is the one the manifest records, but a manifest can be
re-hashed after an edit, and a run removed together with its manifest lines leaves a
manifest that agrees with what is left. So `dlbench verify` also checks here that:

- every file a sealed bundle has is there (suite.yaml, plan.json, ..., report.html);
- every run plan.json lists has its run directory with a recorded outcome (run.json), and
  every run directory is a run plan.json lists;
- summary.json is what orchestrator.analysis.summary makes of the runs' files: each field
  it records is re-derived and compared (a field a dlbench before this one did not write
  may be absent; a field the runs cannot give is a problem);
- summary.csv is summary.json flattened, cell for cell;
- images.json describes every image or virtualenv a run's run.json names.

Each problem is one line naming the file and field. It runs only over a bundle whose files
each verify (`dlbench verify` runs it when bundle.located_problems finds nothing), so every
document read here has its schema's shape: one cause, one line. Reads only, and never
through a link (orchestrator.results.nofollow); never writes.
"""
from __future__ import annotations

import csv
import io
import math
import os
import stat
from pathlib import Path

from orchestrator.analysis.summary import summarize
from orchestrator.errors import DlbenchError
from orchestrator.results import nofollow
from orchestrator.results.directory import load_runs

# What every sealed bundle holds besides its runs (MANIFEST.sha256 is bundle.verify's).
SEALED_FILES = ("suite.yaml", "plan.json", "system.json", "images.json", "summary.json",
                "summary.csv", "report.html")
MAX_FIELD_LINES = 20   # a summary.json made up wholesale: the first differences say enough


def located_problems(path: Path) -> list[tuple[str, str]]:
    """Every disagreement between a bundle directory's files, as (path it is about, line)."""
    path = Path(path)
    plan = _json(path, "plan.json")
    run_ids = _run_directories(path)
    problems = [(name, f"{name}: missing (every sealed bundle has it)") for name in SEALED_FILES
                if not _is_file(path, name)]
    if isinstance(plan, dict):
        problems += _plan_problems(path, plan, run_ids)
    problems += _summary_problems(path, plan)
    problems += _csv_problems(path)
    problems += _image_problems(path, run_ids)
    return problems


def _json(path: Path, rel: str):
    try:
        return nofollow.read_json_or_none(path, rel)
    except DlbenchError:
        return None  # a link or FIFO: bundle.verify names it


def _is_file(path: Path, rel: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path / rel).st_mode)
    except OSError:
        return False


def _run_directories(path: Path) -> list[str]:
    """The real directories under runs/ (a link is never one: bundle.verify names it)."""
    runs = path / "runs"
    try:
        if not stat.S_ISDIR(os.lstat(runs).st_mode):
            return []
        with os.scandir(runs) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


# ---------------------------------------------------------------------------
# plan.json <-> run directories
# ---------------------------------------------------------------------------

def _plan_problems(path: Path, plan: dict, run_ids: list[str]) -> list[tuple[str, str]]:
    planned = [run.get("run_id") for run in plan.get("runs") or [] if isinstance(run, dict)]
    problems = []
    for index, run_id in enumerate(planned):
        rel = f"runs/{run_id}"
        if run_id not in run_ids:
            problems.append((rel, f"{rel}: planned (plan.json runs[{index}]) but the bundle has no run "
                                  "directory for it: removed, or the suite stopped before it "
                                  "(dlbench run --resume finishes a results directory)"))
        elif not _is_file(path, f"{rel}/run.json"):
            problems.append((f"{rel}/run.json", f"{rel}/run.json: missing, so the run planned as "
                                                f"plan.json runs[{index}] has no recorded outcome"))
    for run_id in run_ids:
        if run_id not in planned:
            problems.append((f"runs/{run_id}", f"runs/{run_id}: not a run plan.json lists "
                                               "(added after the suite was planned)"))
    return problems


# ---------------------------------------------------------------------------
# summary.json <-> the runs' files
# ---------------------------------------------------------------------------

def _summary_problems(path: Path, plan) -> list[tuple[str, str]]:
    stored = _json(path, "summary.json")
    if not isinstance(stored, dict):
        return []
    try:
        rows = load_runs(path)
    except DlbenchError:
        return []  # a link among the runs: bundle.verify names it
    threshold = ((plan or {}).get("statistics") or {}).get("cv_threshold") if isinstance(plan, dict) else None
    derived = summarize(rows, threshold)
    lines = _run_entry_problems(stored.get("runs"), derived["runs"])
    for key, value in stored.items():
        if key == "runs":
            continue
        if key not in derived:
            lines.append(f"summary.json: {key}: not something dlbench derives from the runs")
        else:
            lines += [f"summary.json: {where}: {what}" for where, what in _differences(value, derived[key], key)]
    if len(lines) > MAX_FIELD_LINES:
        lines = [*lines[:MAX_FIELD_LINES], f"summary.json: {len(lines) - MAX_FIELD_LINES} more field(s) "
                                           "disagree with the runs' files"]
    return [("summary.json", line) for line in lines]


def _run_entry_problems(stored, derived: list[dict]) -> list[str]:
    if not isinstance(stored, list):
        return []  # the schema requires a list: bundle.verify named it
    stored_ids = [e.get("run_id") for e in stored if isinstance(e, dict)]
    derived_ids = [e["run_id"] for e in derived]
    lines = [f"summary.json: runs[{index}] is run {run_id}, which has no run directory"
             for index, run_id in enumerate(stored_ids) if run_id not in derived_ids]
    lines += [f"summary.json: runs: no entry for run {run_id} (runs/{run_id} is there)"
              for run_id in derived_ids if run_id not in stored_ids]
    if not lines and stored_ids != derived_ids:
        lines.append("summary.json: runs: not in the order of the run directories")
    by_id = {e["run_id"]: e for e in derived}
    for index, entry in enumerate(e for e in stored if isinstance(e, dict)):
        run_id = entry.get("run_id")
        if run_id not in by_id:
            continue
        lines += [f"summary.json: {where} ({run_id}): {what}"
                  for where, what in _differences(entry, by_id[run_id], f"runs[{index}]")]
    return lines


def _differences(stored, derived, where: str) -> list[tuple[str, str]]:
    """(field, what differs) for every value of `stored` that `derived` does not agree with;
    keys `stored` lacks are not differences (an older dlbench wrote fewer), nor is a key it
    has and `derived` lacks when its value is null (it claims nothing)."""
    if isinstance(stored, dict) and isinstance(derived, dict):
        found = []
        for key, value in stored.items():
            if key not in derived and value is None:
                continue
            if key not in derived:
                found.append((f"{where}.{key}", f"records {_shown(value)}, which the runs' files do not give"))
            else:
                found += _differences(value, derived[key], f"{where}.{key}")
        return found
    if isinstance(stored, list) and isinstance(derived, list):
        if len(stored) != len(derived):
            return [(where, f"records {len(stored)} item(s), the runs' files give {len(derived)}")]
        return [d for i, (a, b) in enumerate(zip(stored, derived)) for d in _differences(a, b, f"{where}[{i}]")]
    if _same(stored, derived):
        return []
    return [(where, f"records {_shown(stored)}, the runs' files give {_shown(derived)}")]


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, int | float) and isinstance(b, int | float)):
        return type(a) is type(b) and a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)  # another libm may round the last bit


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# ---------------------------------------------------------------------------
# summary.csv <-> summary.json
# ---------------------------------------------------------------------------

def _csv_problems(path: Path) -> list[tuple[str, str]]:
    summary = _json(path, "summary.json")
    try:
        text = nofollow.read_bytes(path, "summary.csv").decode("utf-8")
    except (OSError, DlbenchError, UnicodeDecodeError):
        return []  # missing (named above) or refused (bundle.verify)
    if not isinstance(summary, dict) or not isinstance(summary.get("runs"), list):
        return []
    entries = [e for e in summary["runs"] if isinstance(e, dict)]
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    header = reader.fieldnames or []
    # as summary_csv writes it: a key nested in any run (e.g. `monitor`, null where a run
    # was never sampled) has no column, even where another run carries it as a scalar
    nested = {k for e in entries for k, v in e.items() if isinstance(v, dict | list)}
    problems = [f"summary.csv: no column {key} (summary.json's runs carry it)"
                for key in sorted({k for e in entries for k, v in e.items()
                                   if not isinstance(v, dict | list)} - nested - set(header))]
    if len(rows) != len(entries):
        problems.append(f"summary.csv: {len(rows)} run row(s), summary.json has {len(entries)} run(s)")
    for number, (row, entry) in enumerate(zip(rows, entries), start=2):
        for column, cell in row.items():
            if column is None:
                problems.append(f"summary.csv: line {number} has more cells than columns")
                continue
            value = entry.get(column)
            if cell != ("" if value is None else str(value)):  # as csv.DictWriter writes it
                problems.append(f"summary.csv: line {number} ({entry.get('run_id')}), column {column}: "
                                f"{_shown(cell)}, summary.json has {_shown(value)}")
    return [("summary.csv", line) for line in problems[:MAX_FIELD_LINES]]


# ---------------------------------------------------------------------------
# images.json <-> the environments runs name
# ---------------------------------------------------------------------------

def _image_problems(path: Path, run_ids: list[str]) -> list[tuple[str, str]]:
    images = _json(path, "images.json")
    if not isinstance(images, dict):
        return []
    described = [entry for entry in images.values() if isinstance(entry, dict)]
    problems = []
    for run_id in run_ids:
        rel = f"runs/{run_id}/run.json"
        record = _json(path, rel)
        environment = record.get("environment") if isinstance(record, dict) else None
        if not isinstance(environment, dict):
            continue
        names = {key: value for key, value in environment.items() if value is not None}
        field = next((key for key in ("id", "path", "tag") if names.get(key)), None)
        if field is None:
            continue  # the run had no environment (it could not be prepared)
        if not any(all(entry.get(key) == value for key, value in names.items()) for entry in described):
            problems.append(("images.json", f"images.json: describes no environment matching the one {rel} "
                                            f"names (environment.{field} {names[field]})"))
    return problems
