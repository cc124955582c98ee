"""summary.json, and the analyses it shares with the report, each computed once.

A summary entry per run (its outcome, what ran, and the `summary` metrics of
orchestrator.results.metrics), then the statistics over repeats, the input-bound
pairs and, for a suite with data-parallel runs, their scaling. Reads rows
(results.directory.load_runs); never writes a file or renders a page.
"""
from __future__ import annotations

from collections.abc import Mapping

from orchestrator.analysis import input_bound, scaling, stats
from orchestrator.analysis.groups import ok_groups, topology
from orchestrator.results.metrics import summary_metrics

SUMMARY_SCHEMA_VERSION = 1


def analyse(rows: list[dict], cv_threshold: float | None = None) -> dict:
    """Every analysis of a results directory's runs: statistics over repeats, the groups of
    successful repeats (charts, comparisons), the input-bound pairs made from them and the
    data-parallel runs against their 1-worker baselines (scaling)."""
    threshold = stats.DEFAULT_CV_THRESHOLD if cv_threshold is None else cv_threshold
    groups = ok_groups(rows)
    return {"statistics": stats.analyse(rows, threshold), "groups": groups,
            "input_bound": input_bound.analyse(rows, groups), "scaling": scaling.analyse(rows)}


def entry(row: dict) -> dict:
    """One run's line of summary.json: the numbers a reader compares."""
    m, rec = row["metrics"], row["record"] or {}
    out = {"run_id": row["run_id"], "outcome": rec.get("outcome", "unknown"),
           "backend": rec.get("backend"), "message": rec.get("message"),
           "batch_size": (row.get("spec") or {}).get("batch_size"),
           "monitor": rec.get("monitor")}
    shape = topology(row)
    if shape.workers > 1:  # only then: summary.json of a suite without parallel runs is unchanged
        out.update({"workers": shape.workers, "nodes": shape.nodes, "scaling": shape.scaling})
    if m and m["status"] == "ok":
        out.update({
            "framework": m["framework"]["name"], "api": m["framework"]["api"],
            "framework_version": m["framework"]["version"],
            "workload": m["workload"], "dataset": m["dataset"]["name"],
            "synthetic": bool(m["dataset"].get("synthetic")),
        })
        out.update({metric.key: metric.value(m) for metric in summary_metrics()})
    return out


def summarize(rows: list[dict], cv_threshold: float | None = None,
              analyses: Mapping | None = None) -> dict:
    """summary.json: one flat entry per run, then the statistics over repeats, the
    input-bound pairs and, when the suite has parallel runs, their scaling. `analyses`: those
    already made for these rows (analyse(), or the report context that report.load built
    with it); computed here when not given."""
    if analyses is None:
        analyses = analyse(rows, cv_threshold)
    summary = {"schema_version": SUMMARY_SCHEMA_VERSION, "runs": [entry(row) for row in rows],
               "statistics": analyses["statistics"], "input_bound": analyses["input_bound"]}
    found = analyses["scaling"] if "scaling" in analyses else scaling.analyse(rows)
    if found:  # absent otherwise: a suite without parallel runs summarises as before
        summary["scaling"] = found
    return summary
