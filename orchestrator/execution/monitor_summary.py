"""The monitor's summary in run.json, computed from runs/<id>/monitor.jsonl alone (so it can
be recomputed from a results directory): peak / mean per quantity, GPU energy over the run
where power is reported, and energy over the timed epochs (the workload's `timed` marks):
NVML's total-energy counter differenced, else integrated power.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.execution.monitor import FILENAME
from orchestrator.fileio import read_json_or_none


def _peak_mean(samples: list[float | None]) -> dict:
    values = [v for v in samples if v is not None]
    if not values:
        return {"peak": None, "mean": None}
    return {"peak": round(max(values), 2), "mean": round(sum(values) / len(values), 2)}


def _energy_j(times: list[float], watts: list[float | None]) -> float | None:
    """Trapezoidal integral of power over time."""
    points = [(t, w) for t, w in zip(times, watts) if w is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(points, points[1:]))


ENERGY_METHODS = ("nvml_total_energy_counter", "power_integration")  # run.json's energy_method
NO_PROCESS_MEMORY = ("not reported: NVML listed no memory for the run's own processes on its GPUs "
                     "(the driver does not give it, or their process IDs are not this host's)")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_lines(path: Path) -> list[dict] | None:
    """monitor.jsonl's objects that carry a time (the workload can write the file too)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return [line for line in lines if isinstance(line, dict) and _number(line.get("t"))]


def summarize(path: Path, interval: float | None = None) -> dict | None:
    """Peak / mean per quantity; where power is reported, GPU energy in joules over the
    whole run; and energy over the timed epochs alone (timed_energy)."""
    lines = _read_lines(path)
    if lines is None:
        return None
    marks = [line for line in lines if line.get("timed") in ("begin", "end")]
    lines = [line for line in lines if "timed" not in line]
    times = [line["t"] for line in lines]
    gpus: list[dict] = []
    summary: dict[str, Any] = {
        "interval_s": interval, "samples": len(lines),
        "duration_s": round(times[-1] - times[0], 3) if lines else 0.0,
        "cpu_percent": _peak_mean([line.get("cpu_percent") for line in lines]),
        "memory_mb": _peak_mean([line.get("memory_mb") for line in lines]),
        "gpus": gpus, "gpu_energy_j": None}
    by_index: dict[int, list[tuple[float, dict]]] = {}
    for line in lines:
        for gpu in _gpu_entries(line):
            if isinstance(gpu, dict) and isinstance(gpu.get("index"), int):
                by_index.setdefault(gpu["index"], []).append((line["t"], gpu))
    energies: list[float | None] = []
    for index, samples in sorted(by_index.items()):
        energy = _energy_j([t for t, _ in samples], [g.get("power_w") for _, g in samples])
        energies.append(energy)
        gpus.append({"index": index,
                     "util_percent": _peak_mean([g.get("util_percent") for _, g in samples]),
                     "memory_mb": _peak_mean([g.get("memory_mb") for _, g in samples]),
                     "power_w": _peak_mean([g.get("power_w") for _, g in samples]),
                     "process_memory_mb": _peak_mean([g.get("process_memory_mb") for _, g in samples]),
                     "energy_j": round(energy, 3) if energy is not None else None})
    known = [e for e in energies if e is not None]
    if energies and len(known) == len(energies):
        summary["gpu_energy_j"] = round(sum(known), 3)
    measured = any(g["process_memory_mb"]["peak"] is not None for g in gpus)
    summary["process_memory_note"] = NO_PROCESS_MEMORY if gpus and not measured else None
    summary.update(timed_energy(lines, marks))
    return summary


def timed_energy(samples: list[dict], marks: list[dict]) -> dict:
    """Energy of the run's GPUs over its timed epochs: the NVML total-energy counter read at
    each epoch's edges, differenced; where a board has no counter, sampled power (and the
    power read at the edges) integrated over each epoch. energy_method says which; None
    when neither can be had (no GPU, no timed epoch, no power)."""
    windows = _timed_windows(marks)
    result: dict[str, Any] = {"timed_epochs": len(windows),
                              "timed_images": sum(end["images"] for _, end in windows) if windows else None,
                              "timed_energy_j": None, "energy_method": None}
    if not windows:
        return result
    for method, energy_of in zip(ENERGY_METHODS, (_counter_j, lambda b, e: _integrated_j(samples, b, e))):
        energies = [energy_of(begin, end) for begin, end in windows]
        if all(energy is not None for energy in energies):
            result.update(timed_energy_j=round(sum(e for e in energies if e is not None), 3),
                          energy_method=method)
            break
    return result


def _timed_windows(marks: list[dict]) -> list[tuple[dict, dict]]:
    """(begin, end) lines of each timed epoch that has both, in order."""
    begun: dict[Any, dict] = {}
    windows = []
    for mark in marks:
        epoch = mark.get("epoch")
        if not isinstance(epoch, int):
            continue
        if mark["timed"] == "begin":
            begun[epoch] = mark
        elif epoch in begun and isinstance(mark.get("images"), int) and mark["t"] >= begun[epoch]["t"]:
            windows.append((begun.pop(epoch), mark))
    return windows


def _gpu_entries(line: dict) -> list:
    gpus = line.get("gpus")
    return gpus if isinstance(gpus, list) else []


def _readings(mark: dict, field: str) -> dict:
    counters = mark.get("counters")
    return {c["index"]: c.get(field) for c in counters if isinstance(c, dict) and isinstance(c.get("index"), int)} \
        if isinstance(counters, list) else {}


def _counter_j(begin: dict, end: dict) -> float | None:
    """One timed epoch from the counters (mJ); None unless every GPU has both readings."""
    before, after = _readings(begin, "energy_mj"), _readings(end, "energy_mj")
    if not before or before.keys() != after.keys():
        return None
    deltas = [after[i] - before[i] for i in before if _number(before[i]) and _number(after[i])]
    if len(deltas) != len(before) or any(delta < 0 for delta in deltas):  # a counter reset
        return None
    return sum(deltas) / 1000.0


def _integrated_j(samples: list[dict], begin: dict, end: dict) -> float | None:
    """One timed epoch from power: the samples inside it and the readings at its edges."""
    start, stop = _readings(begin, "power_w"), _readings(end, "power_w")
    if not start:
        return None
    total = 0.0
    for index in start:
        inside = [(line["t"], gpu.get("power_w")) for line in samples if begin["t"] < line["t"] < end["t"]
                  for gpu in _gpu_entries(line) if isinstance(gpu, dict) and gpu.get("index") == index]
        points = [(begin["t"], start[index]), *inside, (end["t"], stop.get(index))]
        energy = _energy_j([t for t, _ in points], [w if _number(w) else None for _, w in points])
        if energy is None:
            return None
        total += energy
    return total


def energy_per_train_image(summary: dict | None, metrics: dict | None) -> float | None:
    """GPU energy over the timed epochs divided by the images they trained on (both from
    the timed lines of monitor.jsonl, so a reader can recompute it): start-up, warm-up and
    evaluation are not in it. None unless the run ended ok."""
    if not summary or summary.get("timed_energy_j") is None or not summary.get("timed_images") \
            or not metrics or metrics.get("status") != "ok":
        return None
    return summary["timed_energy_j"] / summary["timed_images"]


def run_summary(run_path: Path, interval: float | None) -> dict | None:
    """run.json's `monitor`: the summary of monitor.jsonl plus energy per training image."""
    summary = summarize(Path(run_path) / FILENAME, interval)
    if summary is not None:
        metrics = read_json_or_none(Path(run_path) / "metrics.json")
        per_image = energy_per_train_image(summary, metrics)
        summary["energy_per_train_image_j"] = round(per_image, 9) if per_image is not None else None
    return summary
