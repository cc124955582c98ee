"""`dlbench compare A B`: the same experiments in two bundles, metric by metric.

Runs are matched by suite entry (run id without its repeat suffix) when framework
and API agree, else by framework + API + workload + device + batch size. Each key
metric (the `compare` rows of orchestrator.results.metrics) gets the ratio B / A and,
where both sides have repeats, Welch's t-test (orchestrator.analysis.stats.welch) to say
whether the difference is more than noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import report
from orchestrator.analysis import stats
from orchestrator.analysis.groups import Group, ok_groups
from orchestrator.results import bundle
from orchestrator.results.metrics import compared_metrics, metric_named


@dataclass
class MetricComparison:
    metric: str
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    p: float | None
    significant: bool | None

    @property
    def ratio(self) -> float | None:
        return self.mean_b / self.mean_a if self.mean_a else None

    @property
    def verdict(self) -> str:
        if self.significant is None:
            return "no test (needs 2+ repeats a side)"
        if not self.significant:
            return "no significant difference"
        better = (self.mean_b > self.mean_a) == metric_named(self.metric).higher_is_better
        return "B better" if better else "A better"


@dataclass
class Match:
    a: Group
    b: Group
    metrics: list[MetricComparison] = field(default_factory=list)


@dataclass
class Comparison:
    name_a: str
    name_b: str
    matches: list[Match]
    only_a: list[Group]
    only_b: list[Group]


def match_groups(a: list[Group], b: list[Group]) -> tuple[list[tuple[Group, Group]], list, list]:
    pairs, left, right = [], list(a), list(b)
    for g in list(left):  # same suite entry, same framework/API
        twin = next((h for h in right if h.key == g.key and h.identity[:2] == g.identity[:2]), None)
        if twin:
            pairs.append((g, twin))
            left.remove(g)
            right.remove(twin)
    for g in list(left):  # otherwise the same experiment, when that is unambiguous
        same = [h for h in right if h.identity == g.identity]
        if len(same) == 1 and sum(x.identity == g.identity for x in left) == 1:
            pairs.append((g, same[0]))
            left.remove(g)
            right.remove(same[0])
    return pairs, left, right


def compare_contexts(a: dict, b: dict, name_a: str, name_b: str) -> Comparison:
    pairs, only_a, only_b = match_groups(ok_groups(a["runs"]), ok_groups(b["runs"]))
    matches = []
    for ga, gb in pairs:
        match = Match(ga, gb)
        for metric in compared_metrics():
            va, vb = ga.values(metric.key), gb.values(metric.key)
            if va and vb:
                test = stats.welch(va, vb)
                match.metrics.append(MetricComparison(metric.key, sum(va) / len(va), sum(vb) / len(vb),
                                                      len(va), len(vb), test["p"], test["significant"]))
        matches.append(match)
    return Comparison(name_a, name_b, matches, only_a, only_b)


def compare(path_a: Path, path_b: Path) -> Comparison:
    with bundle.opened(path_a) as a, bundle.opened(path_b) as b:
        bundle.require_documents(a, path_a)
        bundle.require_documents(b, path_b)
        return compare_contexts(report.load(a), report.load(b),
                                bundle.bundle_name(Path(path_a)), bundle.bundle_name(Path(path_b)))


def _number(value: float, metric: str) -> str:
    """A fraction to its digits; any other quantity by its size."""
    shown = metric_named(metric)
    if shown.fraction:
        return f"{value:.{shown.digits}f}"
    return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"


def format_text(result: Comparison) -> str:
    header = ("run (A ~ B)", "metric", "A", "B", "B/A", "n A/B", "p", "verdict")
    rows = [header]
    for match in result.matches:
        label = match.a.key if match.a.key == match.b.key else f"{match.a.key} ~ {match.b.key}"
        for mc in match.metrics:
            rows.append((label, metric_named(mc.metric).heading, _number(mc.mean_a, mc.metric),
                         _number(mc.mean_b, mc.metric),
                         f"{mc.ratio:.3f}" if mc.ratio is not None else "-",
                         f"{mc.n_a}/{mc.n_b}", f"{mc.p:.3g}" if mc.p is not None else "-", mc.verdict))
            label = ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"A: {result.name_a}", f"B: {result.name_b}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if not result.matches:
        lines.append("no run of A matches a run of B (same suite entry, or framework/API/workload/"
                     "device/batch size)")
    for side, groups in (("A", result.only_a), ("B", result.only_b)):
        if groups:
            lines.append(f"only in {side}: {', '.join(g.key for g in groups)}")
    return "\n".join(lines)


def render_html(result: Comparison) -> str:
    return report.jinja_environment().get_template("compare.html.j2").render(
        result=result, metric_named=metric_named, number=_number)
