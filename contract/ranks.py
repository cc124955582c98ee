"""One data-parallel run from its ranks' results: each worker writes ranks/rank-<r>.json (its
own metrics: its rows, its epoch times, its status); whoever supervised the workers on the
first node (workloads/launcher.py, or the Slurm job program) merges them into the run's
metrics.json. Plain JSON work, imported by both sides.

Figures of the merged run are global: an epoch takes as long as its slowest rank, and
processes every rank's rows; losses and accuracies are the ranks' means (equal shards).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import statistics

RANKS_DIR = "ranks"
FAILED = ("failed", "oom", "unsupported")  # a rank's own failure (not "stopped" by the launcher)


def rank_file(out_dir: str, rank: int) -> str:
    return os.path.join(out_dir, RANKS_DIR, f"rank-{rank}.json")


def read_ranks(out_dir: str, size: int) -> list[dict | None]:
    """Each rank's metrics, None where a rank left nothing readable (killed, crashed)."""
    found: list[dict | None] = []
    for rank in range(size):
        try:
            with open(rank_file(out_dir, rank), encoding="utf-8") as fh:
                data = json.load(fh)
            found.append(data if isinstance(data, dict) else None)
        except (OSError, ValueError):
            found.append(None)
    return found


def exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit code {code}"


def failed_rank(ranks: list[dict | None], exit_codes: dict[int, int | None]) -> int | None:
    """The rank that brought the run down. A rank that died without a result (killed,
    crashed) comes first: the others then fail on the lost connection or are stopped.
    Else the rank whose own failure came first (a peer's failure makes the others fail
    a moment later, in their collectives)."""
    dead = [r for r, m in enumerate(ranks) if m is None or m.get("status") not in ("ok", "stopped", *FAILED)]
    if dead:  # several: the one whose end the supervisor saw first (exit_codes keeps that order)
        seen = list(exit_codes)
        return min(dead, key=lambda r: (seen.index(r) if r in seen else len(seen), r))
    failed = [(m.get("finished_at", ""), r) for r, m in enumerate(ranks) if m and m.get("status") in FAILED]
    if failed:
        return min(failed)[1]
    for rank, code in sorted(exit_codes.items()):
        if code:
            return rank
    return None


def _rank_row(rank: int, metrics: dict | None, exit_code: int | None) -> dict:
    info = (metrics or {}).get("rank", {})
    epochs = (metrics or {}).get("epochs") or []
    timing = (metrics or {}).get("timing") or {}
    comm = info.get("communication") or {}
    return {
        "rank": rank, "local_rank": info.get("local_rank"), "node": info.get("node"),
        "cpus": info.get("cpus", []),
        "status": metrics.get("status", "failed") if metrics else "missing",
        "error": metrics.get("error") if metrics else
        f"died without a result ({exit_text(exit_code)})" if exit_code is not None else
        "died without a result (killed or crashed; its launcher gives no exit status per rank)",
        "exit_code": exit_code,
        "epoch_train_s": [e["train_s"] for e in epochs],
        "train_total_s": timing.get("train_total_s"),
        "images_per_s": timing.get("images_per_s"),
        "loss": epochs[-1]["loss"] if epochs else None,
        "test_loss": (metrics or {}).get("test", {}).get("loss"),
        "communication_s": comm.get("time_s"),
        "peak_rss_mb": (metrics or {}).get("memory", {}).get("peak_rss_mb"),
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def merge(spec: dict, ranks: list[dict | None], base: dict, *, launcher: str,
          hosts: list[str], exit_codes: dict[int, int | None] | None = None) -> dict:
    """The run's metrics.json from every rank's. `base`: what to start from when rank 0 left
    nothing (the harness's first metrics of the run); `exit_codes`: rank -> exit status, in
    the order the supervisor saw them end, where it saw each process (torchrun and srun only
    say that one failed)."""
    exit_codes = exit_codes or {}
    parallel = spec["parallel"]
    size = len(ranks)
    rows = [_rank_row(r, m, exit_codes.get(r)) for r, m in enumerate(ranks)]
    first = next((m for m in ranks if m), None)
    metrics = copy.deepcopy(ranks[0] or first or base)
    rank0 = metrics.pop("rank", {})
    bad = failed_rank(ranks, exit_codes)
    per_worker = spec["batch_size"] // size if parallel.get("scaling") == "strong" else spec["batch_size"]
    section = {
        "workers_per_node": parallel["workers_per_node"], "nodes": parallel["nodes"],
        "world_size": size, "scaling": parallel.get("scaling", "weak"),
        "per_worker_batch_size": per_worker, "global_batch_size": per_worker * size,
        "learning_rate_rule": parallel.get("learning_rate_rule", "none"),
        "base_learning_rate": spec["learning_rate"],
        "learning_rate": metrics.get("hyperparameters", {}).get("learning_rate", spec["learning_rate"]),
        "mechanism": rank0.get("mechanism"), "launcher": launcher, "hosts": hosts,
        "dropped_train_samples": rank0.get("dropped_train_samples"),
        "ranks": rows, "failed_rank": bad,
        "communication": rank0.get("communication") or {"time_s": None, "source": "no result"},
        "train_s_spread": None, "slowest_rank": None,
    }
    metrics["parallel"] = section
    if bad is not None or any(m is None or m.get("status") != "ok" for m in ranks):
        row = rows[bad] if bad is not None else rows[0]
        status = row["status"] if row["status"] in FAILED else "failed"
        if all(m and m.get("status") == "unsupported" for m in ranks):
            metrics["status"], metrics["error"] = "unsupported", row["error"]
        else:
            where = f" on {row['node']}" if row["node"] else ""
            metrics["status"] = status
            metrics["error"] = f"rank {row['rank']}{where}: {row['error']}"
        return metrics

    # every rank ok: global figures
    oks: list[dict] = [m for m in ranks if m]
    totals = [m["timing"]["train_total_s"] for m in oks]
    section["slowest_rank"] = max(range(size), key=lambda r: totals[r])
    section["train_s_spread"] = (max(totals) - min(totals)) / statistics.median(totals)
    local_train = oks[0]["dataset"]["train_samples"]
    local_test = oks[0]["dataset"]["test_samples"]
    epochs = []
    for i, epoch in enumerate(oks[0]["epochs"]):
        row_epochs = [m["epochs"][i] for m in oks]
        train_s = max(e["train_s"] for e in row_epochs)
        test_s = [e["test_s"] for e in row_epochs if e["test_s"] is not None]
        epochs.append({**epoch, "train_s": train_s, "images_per_s": local_train * size / train_s,
                       "loss": _mean([e["loss"] for e in row_epochs]),
                       "accuracy": _mean([e["accuracy"] for e in row_epochs]),
                       "test_loss": _mean([e["test_loss"] for e in row_epochs]),
                       "test_accuracy": _mean([e["test_accuracy"] for e in row_epochs]),
                       "test_s": max(test_s) if test_s else None})
    metrics["epochs"] = epochs
    last = epochs[-1]
    metrics["test"] = {"loss": last["test_loss"], "accuracy": last["test_accuracy"]}
    metrics["dataset"] = {**metrics["dataset"], "train_samples": local_train * size,
                          "test_samples": local_test * size}
    timing = metrics["timing"]
    timing["train_total_s"] = sum(e["train_s"] for e in epochs)
    timing["images_per_s"] = local_train * size * len(epochs) / timing["train_total_s"]
    timing["test_s"] = last["test_s"]
    timing["test_images_per_s"] = local_test * size / last["test_s"] if last["test_s"] else 0.0
    steady = metrics.get("steady_state") or {}
    for key in ("images_per_s_median", "images_per_s_min", "images_per_s_max"):
        if steady.get(key) is not None:  # rank 0's windows; every rank steps in lockstep
            steady[key] *= size
    peaks = [m.get("memory", {}).get("peak_rss_mb") for m in oks]
    metrics["memory"] = {**metrics.get("memory", {}),
                         "peak_rss_mb": max((p for p in peaks if p is not None), default=None)}
    return metrics
