"""report.html from a results directory alone (jinja2, autoescaped, self-contained).

Rendering reads only the files of the bundle (never its directory name, the
clock or the host), and the charts are byte-reproducible SVG, so the same bundle
renders to the same bytes anywhere: `dlbench report BUNDLE` proves it offline.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.analysis import scaling, stats
from orchestrator.analysis.groups import is_ok, ok_groups
from orchestrator.analysis.summary import analyse
from orchestrator.fileio import read_json_or_none
from orchestrator.report import charts
from orchestrator.results import nofollow
from orchestrator.results.directory import load_runs
from orchestrator.results.metrics import best_metrics, column_metrics, statistics_metrics

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The summary table marks the best value of each `best` metric's column
# (orchestrator.results.metrics) and the smallest image under this key.
IMAGE_BYTES = "image_bytes"


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
    """The report's context, from the results directory alone; a directory holding a link,
    FIFO or device anywhere is refused in one line (nothing is followed or read)."""
    results = Path(results)
    nofollow.refuse_strange(results)
    plan = read_json_or_none(results / "plan.json") or {}
    runs = load_runs(results)
    for row in runs:
        row["monitor"] = _read_monitor(results / "runs" / row["run_id"] / "monitor.jsonl")
    threshold = (plan.get("statistics") or {}).get("cv_threshold", stats.DEFAULT_CV_THRESHOLD)
    return {"name": results.name, "suite": plan.get("suite", results.name),
            "backend": plan.get("backend"), "system": read_json_or_none(results / "system.json") or {},
            "images": read_json_or_none(results / "images.json") or {},
            **analyse(runs, threshold),  # statistics, groups, input_bound, scaling: summary.json's too
            "runs": runs}


def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _percent(value, digits=1):
    """A fraction as a percentage: 0.9 -> '90.0 %'."""
    return "–" if value is None else f"{value * 100:,.{digits}f} %"


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
    env = dict(rec.get("environment") or {})
    device = spec.get("device", "cpu")
    key = f"{spec.get('framework')}/{'cuda' if device == 'gpu' else 'cpu'}"
    return {**context["images"].get(key, {}), **{k: v for k, v in env.items() if v}}


def _best(ok_rows: list[dict]) -> dict:
    """The best value of each marked column of the summary table: metric key -> value."""
    best: dict[str, Any] = {}
    for metric in best_metrics():
        _keep_best(best, metric.key, [metric.value(r["metrics"]) for r in ok_rows], metric.higher_is_better)
    _keep_best(best, IMAGE_BYTES, [r["env"].get("size_bytes") or None for r in ok_rows], higher=False)
    return best


def _keep_best(best: dict, column: str, values: list, higher: bool | None) -> None:
    present = [v for v in values if v is not None]
    if present:
        best[column] = max(present) if higher else min(present)


def jinja_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, short=_short, bytes=_bytes, percent=_percent)
    return env


def render(context: dict) -> str:
    """The page, from load()'s context (or one with at least its runs, statistics and
    input_bound: the groups and the scaling rows are made here when absent)."""
    rows = [{**row, "env": _environment(context, row)} for row in context["runs"]]
    ok = [r for r in rows if is_ok(r)]
    started = sorted(r["record"]["started_at"] for r in rows if r["record"])
    groups = context["groups"] if "groups" in context else ok_groups(rows)
    scaled = context["scaling"] if "scaling" in context else scaling.analyse(rows)
    return jinja_environment().get_template("report.html.j2").render(
        **{**context, "scaling": scaled}, rows=rows, ok_rows=ok, best=_best(ok),
        started_at=started[0] if started else None, charts=charts.all_charts(groups, rows),
        scaling_chart=charts.scaling(scaled), column_metrics=column_metrics(),
        statistics_metrics=statistics_metrics(), timing_split=stats.TIMING_SPLIT)
