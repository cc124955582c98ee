"""Data-parallel scaling: each parallel run against the 1-worker run of its configuration.

For every suite entry that trained with a world size S > 1 (metrics.json `parallel`), the
baseline is the 1-worker run(s) of the same configuration in the same suite: the same spec
but for its batch size and `parallel` settings, with a batch equal to the parallel run's
per-worker batch (weak scaling) or its global batch (strong scaling). With T_S and T1 the
medians over repeats of timing.images_per_s (the parallel run's is already global: all
ranks' images over the slowest rank's time), speed-up = T_S / T1 and efficiency =
T_S / (S x T1). Only successful runs count.

Pure: reads rows (orchestrator.results.directory.load_runs), never a file; every value it
returns is plain JSON (summary.json carries the rows as they are).
"""
from __future__ import annotations

import json
import statistics
from typing import TypedDict

from orchestrator.analysis import stats
from orchestrator.analysis.groups import Topology, is_ok, topology

NO_BASELINE = "no 1-worker run of this configuration in the suite"
NO_THROUGHPUT = "no successful repeat recorded its throughput (timing.images_per_s)"
# Spec fields that do not make a 1-worker run another configuration than a parallel one:
# its identity and repeat, and what the batch matching and the topology decide apart.
NOT_CONFIGURATION = ("run_id", "repeat", "schema_version", "batch_size", "parallel")


class ScalingRow(TypedDict):
    """One parallel suite entry (its repeats inside) against its baseline."""
    label: str                            # its line in the chart: 'pytorch/eager', plus what varies
    framework: str
    api: str
    workload: str
    dataset: str
    device: str
    scaling: str                          # weak | strong
    workers: int                          # world size S
    nodes: int
    per_worker_batch_size: int | None
    global_batch_size: int | None
    mechanism: str | None                 # the framework file's parallel mechanism, as it names it
    run_ids: list[str]                    # successful repeats
    images_per_s: float | None            # T_S: median global throughput over the repeats
    baseline_run_ids: list[str]           # every successful repeat of the 1-worker run(s)
    baseline_images_per_s: float | None   # T1
    ideal_images_per_s: float | None      # S x T1
    speedup: float | None                 # T_S / T1
    efficiency: float | None              # T_S / (S x T1)
    train_s_spread: float | None          # max over repeats of (max - min) / median of ranks' train time
    slowest_rank: int | None              # the slowest rank of the repeat with that spread
    communication_share: float | None     # median over repeats: communication time / slowest train time
    communication_source: str | None      # what measured it, or why nothing did
    reason: str | None                    # why there is no efficiency; None when there is one


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _parallel(row: dict) -> dict:
    found = row["metrics"].get("parallel")
    return found if isinstance(found, dict) else {}


def configuration(row: dict) -> str:
    """Everything a parallel run and its baseline share: the spec less its identity, batch
    size and `parallel` settings (a run without spec.json: what its metrics.json records)."""
    spec = row.get("spec")
    if isinstance(spec, dict) and spec:
        kept = {k: v for k, v in spec.items() if k not in NOT_CONFIGURATION}
    else:
        m = row["metrics"]
        hyper = dict(m.get("hyperparameters") or {})
        if "base_learning_rate" in hyper:  # what the suite asked for, before a scaling rule
            hyper["learning_rate"] = hyper["base_learning_rate"]
        kept = {"framework": m["framework"]["name"], "api": m["framework"]["api"],
                "workload": m.get("workload"), "device": m["device"]["type"],
                "dataset": [m["dataset"].get("name"), bool(m["dataset"].get("synthetic"))],
                **{k: v for k, v in hyper.items()
                   if k not in ("batch_size", "global_batch_size", "base_learning_rate")}}
    return json.dumps(kept, sort_keys=True, default=str)


def batch_sizes(row: dict) -> tuple[int | None, int | None]:
    """(per-worker, global) batch size of a successful run: what its `parallel` object records,
    else its spec's batch size read by the scaling rule (weak: per worker; strong: global)."""
    shape, recorded = topology(row), _parallel(row)
    per_worker, global_ = recorded.get("per_worker_batch_size"), recorded.get("global_batch_size")
    asked = (row.get("spec") or {}).get("batch_size")
    if not isinstance(asked, int):
        asked = (row["metrics"].get("hyperparameters") or {}).get("batch_size")
    if shape.workers == 1:
        one = per_worker or global_ or asked
        return one, one
    if per_worker is None and isinstance(asked, int):
        per_worker = asked if shape.scaling != "strong" else asked // shape.workers
    if global_ is None and isinstance(asked, int):
        global_ = asked * shape.workers if shape.scaling != "strong" else asked
    return per_worker, global_


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _throughput(row: dict) -> float | None:
    return _number((row["metrics"].get("timing") or {}).get("images_per_s"))


def _slowest_train_s(row: dict) -> float | None:
    ranks = [_number(r.get("train_total_s")) for r in _parallel(row).get("ranks") or [] if isinstance(r, dict)]
    present = [t for t in ranks if t is not None]
    return max(present) if present else _number((row["metrics"].get("timing") or {}).get("train_total_s"))


def _slowest_rank(row: dict) -> int | None:
    recorded = _parallel(row).get("slowest_rank")
    if isinstance(recorded, int):
        return recorded
    timed = [(t, r.get("rank")) for r in _parallel(row).get("ranks") or []
             if isinstance(r, dict) and (t := _number(r.get("train_total_s"))) is not None]
    return max(timed, key=lambda pair: pair[0])[1] if timed else None


def _communication_share(row: dict) -> float | None:
    comm = _parallel(row).get("communication")
    time_s = _number(comm.get("time_s")) if isinstance(comm, dict) else None
    slowest = _slowest_train_s(row)
    return time_s / slowest if time_s is not None and slowest else None


def _communication_source(rows: list[dict]) -> str | None:
    for row in rows:
        comm = _parallel(row).get("communication")
        if isinstance(comm, dict) and isinstance(comm.get("source"), str):
            return comm["source"]
    return None


def _spread(rows: list[dict]) -> tuple[float | None, int | None]:
    """The largest train-time spread over the repeats, and the slowest rank of that repeat."""
    spreads = [(s, row) for row in rows if (s := _number(_parallel(row).get("train_s_spread"))) is not None]
    if not spreads:
        return None, next((r for r in map(_slowest_rank, rows) if r is not None), None)
    spread, row = max(spreads, key=lambda pair: pair[0])
    return spread, _slowest_rank(row)


def _entries(rows: list[dict]) -> dict[str, list[dict]]:
    """Successful runs by suite entry (run ids less their -rK suffix), in suite order."""
    entries: dict[str, list[dict]] = {}
    for row in rows:
        if is_ok(row):
            entries.setdefault(stats.group_id(row["run_id"]), []).append(row)
    return entries


def _baselines(entries: dict[str, list[dict]]) -> dict[tuple[str, int | None], list[dict]]:
    """1-worker runs by (configuration, batch size); repeats of several entries pool."""
    found: dict[tuple[str, int | None], list[dict]] = {}
    for members in entries.values():
        for row in members:
            if topology(row).workers == 1:
                found.setdefault((configuration(row), batch_sizes(row)[0]), []).append(row)
    return found


def _row(members: list[dict], shape: Topology, baseline: list[dict]) -> ScalingRow:
    first, recorded = members[0]["metrics"], _parallel(members[0])
    per_worker, global_ = batch_sizes(members[0])
    t_s = _median([_throughput(r) for r in members])
    t_1 = _median([_throughput(r) for r in baseline])
    spread, slowest = _spread(members)
    ideal = shape.workers * t_1 if t_1 else None
    reason = NO_THROUGHPUT if t_s is None else NO_BASELINE if not baseline or not t_1 else None
    return ScalingRow(
        label="", framework=first["framework"]["name"], api=first["framework"]["api"],
        workload=first.get("workload", ""), dataset=(first.get("dataset") or {}).get("name", ""),
        device=first["device"]["type"], scaling=shape.scaling or "weak", workers=shape.workers,
        nodes=shape.nodes, per_worker_batch_size=per_worker, global_batch_size=global_,
        mechanism=recorded.get("mechanism") if isinstance(recorded.get("mechanism"), str) else None,
        run_ids=[r["run_id"] for r in members], images_per_s=t_s,
        baseline_run_ids=[r["run_id"] for r in baseline], baseline_images_per_s=t_1,
        ideal_images_per_s=ideal,
        speedup=t_s / t_1 if reason is None and t_s is not None and t_1 else None,
        efficiency=t_s / ideal if reason is None and t_s is not None and ideal else None,
        train_s_spread=spread, slowest_rank=slowest,
        communication_share=_median([_communication_share(r) for r in members]),
        communication_source=_communication_source(members), reason=reason)


def analyse(rows: list[dict]) -> list[ScalingRow]:
    """One row per parallel suite entry with a successful repeat, grouped by chart line
    (framework/api, configuration, scaling) in suite order, by world size within a line.
    Empty when the suite has no successful parallel run."""
    entries = _entries(rows)
    baselines = _baselines(entries)
    made: list[tuple[tuple, ScalingRow]] = []
    for members in entries.values():
        shape = topology(members[0])
        if shape.workers == 1:
            continue
        per_worker, global_ = batch_sizes(members[0])
        wanted = (configuration(members[0]), global_ if shape.scaling == "strong" else per_worker)
        made.append(((*wanted, shape.scaling), _row(members, shape, baselines.get(wanted, []))))
    lines = list(dict.fromkeys(line for line, _ in made))
    made.sort(key=lambda item: (lines.index(item[0]), item[1]["workers"], item[1]["nodes"]))
    _label(made)
    return [row for _, row in made]


def _label(made: list[tuple[tuple, ScalingRow]]) -> None:
    """'pytorch/eager', plus workload / device / scaling / batch only where the lines differ
    in them; lines still alike are numbered."""
    rows = [row for _, row in made]
    qualifiers = (
        lambda r: r["workload"], lambda r: r["device"], lambda r: r["scaling"],
        lambda r: (f"{r['per_worker_batch_size']} per worker" if r["scaling"] == "weak"
                   else f"global batch {r['global_batch_size']}"))
    for row in rows:
        row["label"] = f"{row['framework']}/{row['api']}"
    for qualify in qualifiers:
        if len({qualify(r) for r in rows}) > 1:
            for row in rows:
                row["label"] += f" {qualify(row)}"
    labels: dict[str, list[tuple]] = {}
    for line, row in made:
        same = labels.setdefault(row["label"], [])
        if line not in same:
            same.append(line)
    for line, row in made:
        alike = labels[row["label"]]
        if len(alike) > 1:
            row["label"] += f" #{alike.index(line) + 1}"
