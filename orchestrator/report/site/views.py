"""What the results site shows, computed from the bundles read: machines, per-workload
leaderboards and machine-against-machine ratios. Pure: never reads a file or renders.

Everything is sorted by content (names, keys, figures), never by the order bundles were
given, so the same bundles make the same site. Only trusted bundles (verified, and any
signature verifying) are ranked and compared; the others are listed apart, marked.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from orchestrator.analysis import stats
from orchestrator.report.compare import MetricComparison
from orchestrator.report.site.bundles import BundleRecord, Entry, Machine, leaderboard_metrics, slugify


def sorted_bundles(records: list[BundleRecord]) -> list[BundleRecord]:
    return sorted(records, key=lambda b: (b.started_at or "", b.name, b.digest))


@dataclass
class MachineView:
    machine: Machine
    bundles: list[BundleRecord]

    @property
    def key(self) -> str:
        return self.machine.key


def machines(records: list[BundleRecord]) -> list[MachineView]:
    by_key: dict[str, MachineView] = {}
    for record in sorted_bundles(records):
        by_key.setdefault(record.machine.key, MachineView(record.machine, [])).bundles.append(record)
    return sorted(by_key.values(), key=lambda m: (m.machine.label, m.key))


def _entry_order(entry: Entry) -> tuple:
    ranked = leaderboard_metrics()[0]
    mean = entry.mean(ranked.key)
    value = -mean if mean is not None and ranked.higher_is_better else mean
    return (mean is None, value or 0.0, entry.machine.label, entry.config, entry.bundle.started_at or "",
            entry.bundle.name, entry.group.key)


@dataclass
class Leaderboard:
    workload: str
    ranked: list[Entry]          # from trusted bundles, best first
    untrusted: list[Entry]       # from bundles that do not verify: shown, never ranked

    @property
    def slug(self) -> str:
        return f"{slugify(self.workload)}-{hashlib.sha256(self.workload.encode('utf-8')).hexdigest()[:8]}"

    @property
    def with_repeats(self) -> bool:
        return any((e.figures[m.key].get("n") or 0) > 1 for e in self.ranked for m in leaderboard_metrics())


def leaderboards(records: list[BundleRecord]) -> list[Leaderboard]:
    by_workload: dict[str, Leaderboard] = {}
    for record in records:
        for entry in record.entries:
            board = by_workload.setdefault(entry.group.workload, Leaderboard(entry.group.workload, [], []))
            (board.ranked if record.trusted else board.untrusted).append(entry)
    for board in by_workload.values():
        board.ranked.sort(key=_entry_order)
        board.untrusted.sort(key=_entry_order)
    return [by_workload[w] for w in sorted(by_workload)]


# one comparison of a metric between machine A and B: the same as `dlbench compare`'s
Ratio = MetricComparison


@dataclass
class PairRow:
    a: Entry
    b: Entry
    ratios: list[Ratio]


@dataclass
class MachinePair:
    a: MachineView
    b: MachineView
    rows: list[PairRow] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return f"{self.a.key}-vs-{self.b.key}"


def latest_entries(view: MachineView) -> dict[tuple, Entry]:
    """Per experiment, the entry of the machine's latest trusted bundle that ran it."""
    chosen: dict[tuple, Entry] = {}
    for record in view.bundles:  # sorted oldest first: a later one replaces an earlier
        if record.trusted:
            for entry in sorted(record.entries, key=lambda e: e.group.key):
                chosen[entry.config] = entry
    return chosen


def machine_pairs(views: list[MachineView]) -> list[MachinePair]:
    """Every two machines that ran the same experiment (workload, framework/API, precision,
    device, batch size, data, options): ratio B / A and Welch's t-test per figure."""
    pairs = []
    latest = {v.key: latest_entries(v) for v in views}
    for i, a in enumerate(views):
        for b in views[i + 1:]:
            pair = MachinePair(a, b)
            for config in sorted(set(latest[a.key]) & set(latest[b.key]), key=repr):
                ea, eb = latest[a.key][config], latest[b.key][config]
                ratios = [_ratio(m.key, ea, eb) for m in leaderboard_metrics()]
                pair.rows.append(PairRow(ea, eb, [r for r in ratios if r is not None]))
            if pair.rows:
                pairs.append(pair)
    return pairs


def _ratio(metric: str, a: Entry, b: Entry) -> Ratio | None:
    va, vb = a.group.values(metric), b.group.values(metric)
    if not va or not vb:
        return None
    test = stats.welch(va, vb)
    return Ratio(metric, sum(va) / len(va), sum(vb) / len(vb), len(va), len(vb), test["p"],
                 test["significant"])
