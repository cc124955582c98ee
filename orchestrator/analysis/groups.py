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


@dataclass(frozen=True)
class Topology:
    """A run's data-parallel shape. A run without `parallel`, and one with a world size of 1,
    is one worker: weak and strong scaling are then the same run, so `scaling` is None."""
    workers: int = 1                 # world size S = workers_per_node x nodes
    nodes: int = 1
    scaling: str | None = None       # weak | strong, with more than one worker

    def describe(self) -> str:
        """'2 workers', '4 workers on 2 nodes'."""
        text = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return text + (f" on {self.nodes} nodes" if self.nodes > 1 else "")


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def topology(row: dict) -> Topology:
    """What metrics.json's `parallel` records (world_size, nodes, scaling), else what spec.json
    asked for (workers_per_node x nodes, scaling weak unless given): a run that failed before
    writing its `parallel` object is still placed with its own shape."""
    recorded = (row.get("metrics") or {}).get("parallel")
    asked = (row.get("spec") or {}).get("parallel")
    if isinstance(recorded, dict):
        workers = _positive_int(recorded.get("world_size"))
        nodes = _positive_int(recorded.get("nodes")) or 1
        scaling = recorded.get("scaling")
    elif isinstance(asked, dict):
        per_node, nodes = _positive_int(asked.get("workers_per_node")), _positive_int(asked.get("nodes")) or 1
        workers = per_node * nodes if per_node else None
        scaling = asked.get("scaling", "weak")
    else:
        return Topology()
    if not workers or workers == 1:
        return Topology()
    return Topology(workers, nodes, scaling if scaling in ("weak", "strong") else None)


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
    topology: Topology = field(default_factory=Topology)  # data-parallel workers (one by default)

    @property
    def identity(self) -> tuple:
        """What makes two groups from different bundles the same experiment (a 2-worker run
        never matches a 1-worker one)."""
        return (self.framework, self.api, self.workload, self.device, self.batch_size,
                self.dataset, self.synthetic, self.topology)

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
                                synthetic=bool((spec.get("dataset") or {}).get("synthetic")),
                                topology=topology(row))
        groups[key].rows.append(row)
    found = list(groups.values())
    _label(found)
    return found


def _label(groups: list[Group]) -> None:
    """'pytorch/eager', plus workload / device / batch size / data source / data-parallel
    workers only where the suite varies them."""
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
        if varies("topology"):
            label += f" {g.topology.describe()}" + (f" {g.topology.scaling}" if g.topology.scaling else "")
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
