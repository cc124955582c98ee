"""report.html from a results directory alone (jinja2, autoescaped, self-contained).

Rendering reads only files in the results directory, so a copied or published
results directory re-renders the same page anywhere (`dlbench report DIR`).
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2

from .results import load_runs

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _read(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def load(results: Path) -> dict:
    results = Path(results)
    plan = _read(results / "plan.json") or {}
    return {"name": results.name, "suite": plan.get("suite", results.name),
            "backend": plan.get("backend"), "system": _read(results / "system.json") or {},
            "images": _read(results / "images.json") or {}, "runs": load_runs(results)}


def _fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


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


def render(context: dict) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    env.filters["short"] = _short
    rows = [{**row, "env": _environment(context, row)} for row in context["runs"]]
    ok = [r for r in rows if r["metrics"] and r["metrics"]["status"] == "ok"]
    best = {}
    if ok:
        best = {"images_per_s": max(r["metrics"]["timing"]["images_per_s"] for r in ok),
                "accuracy": max(r["metrics"]["test"]["accuracy"] for r in ok),
                "train_total_s": min(r["metrics"]["timing"]["train_total_s"] for r in ok)}
    return env.get_template("report.html.j2").render(**context, rows=rows, ok_rows=ok, best=best)
