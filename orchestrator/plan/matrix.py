"""A suite's `matrix:`: the cross product of its axes, with `exclude:` and `include:`
as in GitHub Actions matrices.

    matrix:
      framework: [pytorch/eager, tensorflow/keras]
      batch_size: [32, 128, 512]
      exclude: [{framework: tensorflow/keras, batch_size: 32}]      # drop matching combinations
      include: [{framework: pytorch/eager, batch_size: 2048,         # a new combination (it would
                 resources: {memory: 1g}}]                           # change an axis value)

exclude: a combination is dropped when it matches every key of an entry.
include: an entry is merged into every combination whose axis values it does not
change; when it fits none, it becomes a combination of its own.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from contract.registry import IMPLEMENTATIONS
from orchestrator.errors import DlbenchError
from orchestrator.plan.rules import check_run_count

# Axis name -> short label used in run ids ("bs512", "t4"); None: the value alone.
AXES = {
    "framework": None, "api": None, "workload": None, "dataset": None, "synthetic": None,
    "batch_size": "bs", "epochs": "e", "learning_rate": "lr",
    "device": None, "precision": None, "intra_op_threads": "t", "inter_op_threads": "it",
    "workers": "w", "nodes": "n", "scaling": None,
}
BOOLEAN_LABELS = {"synthetic": ("real", "synthetic")}  # false, true
THREAD_KEYS = {"intra_op_threads": "intra_op", "inter_op_threads": "inter_op"}
PARALLEL_KEYS = {"workers": "workers", "nodes": "nodes", "scaling": "scaling"}  # -> parallel.*


@dataclass
class Expansion:
    combinations: list[dict]      # run settings overrides, in order
    points: list[dict]            # the same as written in the matrix (for messages)
    labels: list[str]             # per combination: its varying values for the run id
    description: str              # what `dlbench plan` prints about the matrix


def expand(matrix: dict, where: str) -> Expansion:
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    product_size = math.prod(len(v) for v in axes.values()) if axes else 0
    # before anything is built: a hostile matrix of 10^12 combinations must not fill the memory
    check_run_count(product_size, where, allow_large=True, unit="combinations before exclude")
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []

    for i, entry in enumerate(matrix.get("exclude") or []):
        for key in entry:
            if key not in axes:
                raise DlbenchError(f"{where}.exclude[{i}].{key}: not an axis of this matrix "
                                   f"(axes: {', '.join(axes) or 'none'})")
        kept = [c for c in combos if not _matches(c, entry)]
        if len(kept) == len(combos):
            raise DlbenchError(f"{where}.exclude[{i}]: matches no combination; check its values "
                               f"against the axes ({_axes_text(axes)})")
        combos = kept
    excluded = product_size - len(combos)

    originals, added = len(combos), 0
    for entry in matrix.get("include") or []:
        fits = [c for c in combos[:originals] if _matches(c, {k: v for k, v in entry.items() if k in axes})]
        for combo in fits:
            combo.update(entry)
        if not fits:
            combos.append(dict(entry))
            added += 1

    if not combos:
        why = "every one is excluded" if product_size else "it has no axes"
        raise DlbenchError(f"{where}: expands to no combination ({why}, and no include adds "
                           "one); check its axes, exclude and include")
    settings = [_settings(c, f"{where}") for c in combos]
    labels = _labels(combos, [*axes, *AXES])
    description = (f"matrix: {' × '.join(f'{k} ({len(v)})' for k, v in axes.items()) or 'no axes'}"
                   f" = {product_size} combination(s), {excluded} excluded, {added} added by include"
                   f" -> {len(combos)} configuration(s)")
    return Expansion(settings, combos, labels, description)


def _matches(combo: dict, entry: dict) -> bool:
    return all(_norm(k, combo.get(k)) == _norm(k, v) for k, v in entry.items())


def _norm(key, value):
    return _framework_api(value, None) if key == "framework" and isinstance(value, str) else value


def _axes_text(axes: dict) -> str:
    return "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in axes.items())


def _framework_api(framework: str, api: str | None) -> str:
    """'pytorch/eager' stays; 'tensorflow' gets its image's default API (the first one
    docker/images.yaml lists, what `docker run` of that image runs)."""
    if "/" in framework:
        return framework
    if api:
        return f"{framework}/{api}"
    apis = sorted(a for f, a in IMPLEMENTATIONS if f == framework)
    if len(apis) > 1:
        from orchestrator.images import load_images  # images.yaml names the default

        spec = load_images(check_locks=False).get(framework)
        return f"{framework}/{spec.default_api}" if spec else framework
    return f"{framework}/{apis[0]}" if apis else framework


def _settings(combo: dict, where: str) -> dict:
    """A combination as run settings (the keys `runs:` entries use)."""
    settings = {k: v for k, v in combo.items()
                if k not in THREAD_KEYS and k not in PARALLEL_KEYS and k != "framework"}
    if "framework" in combo:
        pair = _framework_api(combo["framework"], combo.get("api"))
        framework, _, api = pair.partition("/")
        settings["framework"] = framework
        if api:
            if combo.get("api") not in (None, api):
                raise DlbenchError(f"{where}: framework '{combo['framework']}' and api "
                                   f"'{combo['api']}' disagree")
            settings["api"] = api
    threads = {THREAD_KEYS[k]: v for k, v in combo.items() if k in THREAD_KEYS}
    if threads:
        settings["threads"] = {**combo.get("threads", {}), **threads}
    parallel = {PARALLEL_KEYS[k]: v for k, v in combo.items() if k in PARALLEL_KEYS}
    if parallel:
        settings["parallel"] = {**combo.get("parallel", {}), **parallel}
    return settings


def _labels(combos: list[dict], order: list[str]) -> list[str]:
    """The run-id part naming what varies, in the matrix's axis order: axis values that
    differ between combinations (framework and api are in every id already)."""
    varying = [k for k in dict.fromkeys(order) if k in AXES and k not in ("framework", "api")
               and len({repr(c.get(k)) for c in combos}) > 1]
    out = []
    for combo in combos:
        parts = []
        for key in varying:
            if key in combo:
                value = combo[key]
                if key in BOOLEAN_LABELS:
                    text = BOOLEAN_LABELS[key][bool(value)]
                else:
                    text = f"{value:g}" if isinstance(value, float) else str(value)
                parts.append(f"{AXES[key] or ''}{text}")
        out.append("-".join(parts))
    return out
