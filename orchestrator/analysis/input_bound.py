"""The input-bound check: the same run on real and on synthetic data (a suite's
`synthetic: [false, true]` axis). Synthetic data is generated in the workload, so it costs
no file reading or decoding; when the real-data run trains markedly slower, the framework
is limited by its input, not by compute. Pairs are groups of repeats that differ only in
`synthetic`; the ratio is of their mean throughputs."""
from __future__ import annotations

from orchestrator.analysis import stats
from orchestrator.analysis.groups import Group, ok_groups

# Real-data throughput below this fraction of the synthetic one counts as input-bound, when
# repeats show the gap is more than run-to-run noise (Welch's t-test, p < 0.05). One run a
# side cannot tell: on a shared machine single runs were seen to differ by 2x either way.
INPUT_BOUND_BELOW = 0.90


def verdict(ratio: float, test: dict) -> str:
    """input-bound | compute-bound | inconclusive (a gap that repeats do not back)."""
    if ratio >= INPUT_BOUND_BELOW:
        return "compute-bound"
    if test["significant"]:
        return "input-bound"
    return "inconclusive"


def _pair_key(g: Group) -> tuple:
    """Everything but the data source, down to the number of samples trained on (a limit
    larger than a real dataset leaves its synthetic twin, always full size, bigger)."""
    samples = g.rows[0]["metrics"]["dataset"]["train_samples"]
    return (*g.identity[:5], g.dataset, samples, repr(sorted(g.options.items())), g.topology)


def _mean_timing(g: Group, key: str) -> float | None:
    values = [r["metrics"]["timing"].get(key) for r in g.rows]
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def analyse(rows: list[dict], groups: list[Group] | None = None) -> list[dict]:
    """One entry per real/synthetic pair, in suite order. `groups`: ok_groups(rows), when
    already made."""
    groups = ok_groups(rows) if groups is None else groups
    synthetic = {_pair_key(g): g for g in groups if g.synthetic}
    pairs = []
    for real in (g for g in groups if not g.synthetic):
        twin = synthetic.get(_pair_key(real))
        real_rate, synthetic_rate = real.mean("images_per_s"), twin and twin.mean("images_per_s")
        if not twin or not real_rate or not synthetic_rate:
            continue
        ratio = real_rate / synthetic_rate
        test = stats.welch(real.values("images_per_s"), twin.values("images_per_s"))
        pairs.append({
            "label": real.label.replace(" real", ""), "dataset": real.dataset,
            "workload": real.workload, "real_run_ids": [r["run_id"] for r in real.rows],
            "synthetic_run_ids": [r["run_id"] for r in twin.rows],
            "real_images_per_s": real_rate, "synthetic_images_per_s": synthetic_rate,
            "real_data_load_s": _mean_timing(real, "data_load_s"),
            "synthetic_data_load_s": _mean_timing(twin, "data_load_s"),
            "ratio": ratio, "p_value": test["p"], "repeats": min(len(real.rows), len(twin.rows)),
            "verdict": verdict(ratio, test), "input_bound": verdict(ratio, test) == "input-bound"})
    return pairs
