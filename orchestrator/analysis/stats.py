"""Statistics over repeats: per group of repeated runs a robust and a parametric
summary, a variability warning, and Welch's t-test between frameworks.

A group is every run of one planned configuration (run ids that differ only in
their `-rK` repeat suffix). Raw values stay in each run's metrics.json; what is
computed here is derived and can always be recomputed from them.
"""
from __future__ import annotations

import math
import re
import statistics
from itertools import combinations
from typing import Any

from orchestrator.plan.suite import DEFAULT_CV_THRESHOLD
from orchestrator.results.metrics import statistics_metrics

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE

# The metrics described over repeats are the `statistics` rows of orchestrator.results.metrics.
# The timing split, a run's phases in order: summarised by median only (reported, never warned
# about). Key in metrics.json's `timing` -> heading in the report.
TIMING_SPLIT = (("startup_s", "Process start → harness"), ("import_s", "Import"), ("data_load_s", "Data load"),
                ("build_s", "Build"), ("first_step_s", "First step"), ("warmup_s", "Warm-up"),
                ("train_total_s", "Timed epochs"), ("test_s", "Evaluation"))
# Spec fields that do not make two configurations different for a comparison.
NOT_SETTINGS = ("run_id", "framework", "api", "repeat", "options", "schema_version")

_REPEAT_SUFFIX = re.compile(r"-r\d+$")


def group_id(run_id: str) -> str:
    return _REPEAT_SUFFIX.sub("", run_id)


def describe(values: list[float]) -> dict:
    """n, median, IQR, mean ± std, t-based 95 % CI, olympic mean and CV of a sample."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"n": 0}
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else None
    q1, q3 = _quartiles(values)
    out: dict[str, Any] = {"n": n, "values": values, "min": min(values), "max": max(values),
                           "median": statistics.median(values), "q1": q1, "q3": q3, "iqr": q3 - q1,
                           "mean": mean, "std": std, "ci95": None, "olympic_mean": None, "cv": None}
    if std is not None:  # two values or more
        from scipy import stats as scipy_stats  # imported when needed: `dlbench plan` stays fast

        half = scipy_stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
        out["ci95"] = [mean - half, mean + half]
        out["cv"] = std / abs(mean) if mean else None
    if n > 2:  # MLPerf-style: drop the fastest and the slowest run
        out["olympic_mean"] = statistics.fmean(sorted(values)[1:-1])
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def welch(a: list[float], b: list[float]) -> dict:
    """Welch's t-test (unequal variances). Undecidable with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return {"t": None, "p": None, "significant": None,
                "note": "needs at least 2 repeats on each side"}
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        same = statistics.fmean(a) == statistics.fmean(b)
        return {"t": None, "p": 1.0 if same else 0.0, "significant": not same,
                "note": "no variance on either side"}
    from scipy import stats as scipy_stats

    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    p = float(result.pvalue)
    return {"t": float(result.statistic), "p": p, "significant": p < ALPHA, "note": None}


def _value(metrics: dict, path: tuple[str, ...]) -> float | None:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, (int, float)) else None


def _settings_key(spec: dict) -> str:
    kept = {k: v for k, v in (spec or {}).items() if k not in NOT_SETTINGS}
    return repr(sorted(kept.items(), key=lambda kv: kv[0]))


def groups(rows: list[dict], cv_threshold: float = DEFAULT_CV_THRESHOLD) -> list[dict]:
    """One entry per configuration: outcomes, statistics per metric, warnings."""
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        by_id.setdefault(group_id(row["run_id"]), []).append(row)
    out = []
    for gid, members in by_id.items():
        spec = next((r["spec"] for r in members if r.get("spec")), None) or {}
        ok = [r["metrics"] for r in members if r.get("metrics") and r["metrics"]["status"] == "ok"]
        entry: dict[str, Any] = {
            "group": gid, "framework": spec.get("framework"), "api": spec.get("api"),
            "batch_size": spec.get("batch_size"), "epochs": spec.get("epochs"),
            "device": spec.get("device"), "threads": spec.get("threads"),
            "runs": [r["run_id"] for r in members],
            "outcomes": [(r.get("record") or {}).get("outcome", "unknown") for r in members],
            "metrics": {}, "timing_median": {}, "warnings": []}
        for metric in statistics_metrics():
            values = [v for v in (_value(m, metric.path) for m in ok) if v is not None]
            entry["metrics"][metric.key] = described = describe(values)
            cv = described.get("cv")
            if cv is not None and cv > cv_threshold:
                entry["warnings"].append(
                    f"{metric.key}: coefficient of variation {cv:.1%} exceeds {cv_threshold:.0%} "
                    f"over {described['n']} repeats; the numbers are unstable")
        for name, _ in TIMING_SPLIT:
            values = [v for v in (_value(m, ("timing", name)) for m in ok) if v is not None]
            entry["timing_median"][name] = statistics.median(values) if values else None
        entry["_key"] = _settings_key(spec)
        out.append(entry)
    return out


def comparisons(group_list: list[dict]) -> list[dict]:
    """Framework vs framework at identical settings: difference of means and whether
    Welch's t-test calls it significant at the 5 % level, per metric."""
    out = []
    by_key: dict[str, list[dict]] = {}
    for g in group_list:
        by_key.setdefault(g["_key"], []).append(g)
    for same in by_key.values():
        for a, b in combinations(same, 2):
            if (a["framework"], a["api"]) == (b["framework"], b["api"]):
                continue
            entry = {"a": a["group"], "b": b["group"], "batch_size": a["batch_size"], "metrics": {}}
            for metric in statistics_metrics():
                name, higher_better = metric.key, metric.higher_is_better
                va, vb = a["metrics"][name].get("values", []), b["metrics"][name].get("values", [])
                if not va or not vb:
                    continue
                mean_a, mean_b = statistics.fmean(va), statistics.fmean(vb)
                test = welch(va, vb)
                better = None
                if test["significant"]:
                    better = a["group"] if (mean_a > mean_b) == higher_better else b["group"]
                entry["metrics"][name] = {"mean_a": mean_a, "mean_b": mean_b,
                                          "ratio": mean_a / mean_b if mean_b else None,
                                          **test, "better": better}
            out.append(entry)
    return out


def analyse(rows: list[dict], cv_threshold: float = DEFAULT_CV_THRESHOLD) -> dict:
    """What summary.json and the report's statistics section carry."""
    group_list = groups(rows, cv_threshold)
    compared = comparisons(group_list)
    for g in group_list:
        del g["_key"]
    return {"cv_threshold": cv_threshold, "confidence": CONFIDENCE, "groups": group_list,
            "comparisons": compared}
