"""`dlbench check`, data-parallel part: do N workers train the model one worker trains?

For every framework/API that runs data-parallel (contract.registry.PARALLEL), two runs on
the same real data, seed and GLOBAL batch: one worker with batch 64, and two workers with
32 each (strong scaling). Plain SGD, not Adam: Adam's update is invariant to a constant
gradient scale, so it could not tell gradients summed across workers from averaged ones;
and no dropout, whose masks differ with the batch's split. After the same steps the two
runs' training loss (over the steps) and test loss (after them) must agree within
TOLERANCE: gradients averaged, not summed (a doubled step) or dropped (each worker alone).
"""
from __future__ import annotations

from dataclasses import dataclass

from contract.registry import PARALLEL

WORKERS = 2
GLOBAL_BATCH = 64
STEPS = 4
# float32 sums in another order: ~1e-7 relative here; a summed gradient moves the loss by
# ~1e-3 after these steps (measured: benchmarks/parallel_scaling.py prints both)
TOLERANCE = 2e-4
SETTINGS = {"batch_size": GLOBAL_BATCH, "train_limit": GLOBAL_BATCH * STEPS, "test_limit": 256,
            "optimizer": "sgd", "learning_rate": 0.05, "dropout": False, "warmup_steps": 1,
            "epochs": 1, "dataset": "fashion-mnist", "synthetic": False, "workload": "mnist_cnn"}


def check_runs(rows: list[tuple[str, str]]) -> list[dict]:
    """The suite's `runs:` entries: a 1-worker and a 2-worker run per data-parallel row."""
    runs = []
    for framework, api in rows:
        if (framework, api) not in PARALLEL:
            continue
        for workers in (1, WORKERS):
            runs.append({"framework": framework, "api": api, **SETTINGS,
                         "parallel": {"workers": workers, "scaling": "strong"}})
    return runs


@dataclass
class PairVerdict:
    row: str
    single: tuple[float, float] | None      # (train loss, test loss) of 1 worker
    parallel: tuple[float, float] | None    # the same, N workers (means over ranks)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _losses(metrics: dict | None) -> tuple[float, float] | None:
    if not metrics or metrics.get("status") != "ok":
        return None
    return metrics["epochs"][0]["loss"], metrics["test"]["loss"]


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def judge_pairs(rows: list[dict]) -> list[PairVerdict]:
    """The check's data-parallel pairs among a results directory's runs (load_runs rows)."""
    pairs: dict[str, dict[int, dict]] = {}
    for row in rows:
        spec = row.get("spec") or {}
        parallel = spec.get("parallel")
        if not parallel or spec.get("optimizer") != "sgd":
            continue
        name = f"{spec['framework']}/{spec['api']}"
        pairs.setdefault(name, {})[parallel["workers_per_node"] * parallel["nodes"]] = row
    verdicts = []
    for name, by_size in sorted(pairs.items()):
        one: dict | None = by_size.get(1)
        many: dict | None = by_size.get(WORKERS)
        single = _losses(one["metrics"]) if one else None
        multi = _losses(many["metrics"]) if many else None
        verdict = PairVerdict(name, single, multi, [])
        for label, entry, losses in (("1 worker", one, single), (f"{WORKERS} workers", many, multi)):
            if losses is None:
                why = ((entry or {}).get("metrics") or {}).get("error") or "no result"
                verdict.problems.append(f"{label}: did not run to the end ({why})")
        if single and multi:
            for what, a, b in (("training loss", single[0], multi[0]), ("test loss", single[1], multi[1])):
                if not _relative(a, b) <= TOLERANCE:
                    verdict.problems.append(f"{what} {b:.6f} with {WORKERS} workers, {a:.6f} with one "
                                            f"(relative {_relative(a, b):.1e} > {TOLERANCE:g})")
        verdicts.append(verdict)
    return verdicts


def format_pairs(verdicts: list[PairVerdict]) -> list[str]:
    if not verdicts:
        return []
    lines = [f"data-parallel: {WORKERS} workers vs 1, same global batch {GLOBAL_BATCH}, SGD, "
             f"{STEPS} steps (tolerance {TOLERANCE:g} relative)"]
    for v in verdicts:
        if v.single and v.parallel:
            figures = (f"train loss {v.single[0]:.6f} / {v.parallel[0]:.6f} "
                       f"(rel {_relative(v.single[0], v.parallel[0]):.1e}), test loss "
                       f"{v.single[1]:.6f} / {v.parallel[1]:.6f} (rel {_relative(v.single[1], v.parallel[1]):.1e})")
        else:
            figures = "-"
        lines.append(f"  {v.row:<20} {figures}  {'ok' if v.ok else 'MISMATCH: ' + '; '.join(v.problems)}")
    bad = sum(not v.ok for v in verdicts)
    lines.append(f"data-parallel: {len(verdicts) - bad} of {len(verdicts)} ok"
                 + (f", {bad} mismatch(es)" if bad else ""))
    return lines
