"""report.html from a results directory alone (jinja2, autoescaped, self-contained).

Rendering reads only the files of the bundle (never its directory name, the
clock or the host), and the charts are byte-reproducible SVG, so the same bundle
renders to the same bytes anywhere: `dlbench report BUNDLE` proves it offline.
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2

from orchestrator.report import charts
from orchestrator.analysis import input_bound
from orchestrator.analysis import stats
from orchestrator.analysis.groups import is_ok, ok_groups
from orchestrator.fileio import read_json_or_none
from orchestrator.results.directory import load_runs

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Summary columns that get a "best" mark: key -> (read from a summary row, higher is better)
BEST_COLUMNS = {
    "train_total_s": (lambda r: r["metrics"]["timing"]["train_total_s"], False),
    "images_per_s": (lambda r: r["metrics"]["timing"].get("images_per_s"), True),
    "test_s": (lambda r: r["metrics"]["timing"]["test_s"], False),
    "accuracy": (lambda r: r["metrics"]["test"]["accuracy"], True),
    "lines_of_code": (lambda r: r["metrics"].get("lines_of_code"), False),
    "image_bytes": (lambda r: r["env"].get("size_bytes") or None, False),
}


def _read_monitor(path: Path) -> list[dict]:
    """runs/<id>/monitor.jsonl (one JSON object a line) when recorded; bad lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    samples = []
    for line in lines:
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(sample, dict):
            samples.append(sample)
    return samples


def load(results: Path) -> dict:
    results = Path(results)
    plan = read_json_or_none(results / "plan.json") or {}
    runs = load_runs(results)
    for row in runs:
        row["monitor"] = _read_monitor(results / "runs" / row["run_id"] / "monitor.jsonl")
    threshold = (plan.get("statistics") or {}).get("cv_threshold", stats.DEFAULT_CV_THRESHOLD)
    return {"name": results.name, "suite": plan.get("suite", results.name),
            "backend": plan.get("backend"), "system": read_json_or_none(results / "system.json") or {},
            "images": read_json_or_none(results / "images.json") or {},
            "statistics": stats.analyse(runs, threshold),
            "input_bound": input_bound.analyse(runs), "runs": runs}


def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _bytes(value):
    if not value:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.2f} {unit}"
    return f"{value} B"


def _short(digest):
    if not digest:
        return "–"
    algo, _, hexpart = str(digest).rpartition(":")
    return f"{algo + ':' if algo else ''}{hexpart[:12]}"


def _environment(context: dict, row: dict) -> dict:
    rec, spec = row["record"] or {}, row["spec"] or {}
    env = dict((rec.get("environment") or {}))
    device = spec.get("device", "cpu")
    key = f"{spec.get('framework')}/{'cuda' if device == 'gpu' else 'cpu'}"
    return {**context["images"].get(key, {}), **{k: v for k, v in env.items() if v}}


def _best(ok_rows: list[dict]) -> dict:
    best = {}
    for column, (read, higher) in BEST_COLUMNS.items():
        values = [v for v in (read(r) for r in ok_rows) if v is not None]
        if values:
            best[column] = max(values) if higher else min(values)
    return best


def jinja_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, short=_short, bytes=_bytes)
    return env


def render(context: dict) -> str:
    rows = [{**row, "env": _environment(context, row)} for row in context["runs"]]
    ok = [r for r in rows if is_ok(r)]
    started = sorted(r["record"]["started_at"] for r in rows if r["record"])
    return jinja_environment().get_template("report.html.j2").render(
        **context, rows=rows, ok_rows=ok, best=_best(ok), started_at=started[0] if started else None,
        charts=charts.all_charts(ok_groups(rows), rows))
