"""Runs grouped the way a reader compares them: one group per suite entry, its repeats inside.

Shared by the report's charts and `dlbench compare`, so both name, match and
average runs the same way. A row is what results.load_runs returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.analysis import stats
from orchestrator.results.metrics import metric_named


def metric_value(metrics: dict, metric: str) -> float | None:
    """A metric of orchestrator.results.metrics (by key) in a metrics.json, as a float."""
    value = metric_named(metric).value(metrics)
    return float(value) if isinstance(value, (int, float)) else None


def is_ok(row: dict) -> bool:
    return bool(row.get("metrics")) and row["metrics"].get("status") == "ok"


@dataclass
class Group:
    key: str
    framework: str
    api: str
    workload: str
    device: str
    batch_size: int | None
    rows: list[dict]                     # successful runs only
    label: str = ""
    options: dict = field(default_factory=dict)  # the suite entry's framework options
    dataset: str = ""
    synthetic: bool = False              # generated data (the input-bound check's twin)

    @property
    def identity(self) -> tuple:
        """What makes two groups from different bundles the same experiment."""
        return (self.framework, self.api, self.workload, self.device, self.batch_size,
                self.dataset, self.synthetic)

    def values(self, metric: str) -> list[float]:
        return [v for v in (metric_value(r["metrics"], metric) for r in self.rows) if v is not None]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return sum(values) / len(values) if values else None

    def ci95(self, metric: str) -> tuple[float, float] | None:
        """95% t-interval of the mean over repeats; None with fewer than two."""
        ci = stats.describe(self.values(metric)).get("ci95")
        return tuple(ci) if ci else None

    def lines_of_code(self) -> int | None:
        return next((r["metrics"].get("lines_of_code") for r in self.rows), None)


def ok_groups(rows: list[dict]) -> list[Group]:
    """Successful runs grouped by suite entry, in run-id order, each with a readable label."""
    groups: dict[str, Group] = {}
    for row in rows:
        if not is_ok(row):
            continue
        spec, m = row.get("spec") or {}, row["metrics"]
        key = stats.group_id(row["run_id"])
        if key not in groups:
            groups[key] = Group(key=key, framework=m["framework"]["name"], api=m["framework"]["api"],
                                workload=m.get("workload", spec.get("workload", "")),
                                device=m["device"]["type"], batch_size=spec.get("batch_size"),
                                rows=[], options=dict(spec.get("options") or {}),
                                dataset=(spec.get("dataset") or {}).get("name", ""),
                                synthetic=bool((spec.get("dataset") or {}).get("synthetic")))
        groups[key].rows.append(row)
    found = list(groups.values())
    _label(found)
    return found


def _label(groups: list[Group]) -> None:
    """'pytorch/eager', plus workload / device / batch size / data source only where the
    suite varies them."""
    varies = lambda attr: len({getattr(g, attr) for g in groups}) > 1  # noqa: E731
    for g in groups:
        label = f"{g.framework}/{g.api}"
        if varies("workload"):
            label += f" {g.workload}"
        if varies("device"):
            label += f" {g.device}"
        if varies("batch_size"):
            label += f" b{g.batch_size}"
        if varies("synthetic"):
            label += " synthetic" if g.synthetic else " real"
        g.label = label
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
    for g in groups:  # same framework/api twice: the options the suite gave tell them apart
        if seen[g.label] > 1 and g.options:
            g.label += " " + ",".join(f"{k}={v}" for k, v in sorted(g.options.items()))
    seen = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
    for g in groups:
        if seen[g.label] > 1:  # still ambiguous: the suite entry's id tells them apart
            g.label = f"{g.key.split('-', 1)[0]}: {g.label}"
