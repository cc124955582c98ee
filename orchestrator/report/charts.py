"""The report's charts: matplotlib figures rendered to inline SVG, byte-reproducibly.

Determinism: a fixed hash salt per chart (it seeds the SVG element ids, which
also keeps ids unique across the charts of one page), no Date metadata, a font
shipped with matplotlib, text kept as text. Each chart returns None when the
bundle has nothing for it to show, so the page simply leaves it out.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import cast

from markupsafe import Markup

from orchestrator.analysis.groups import Group
from orchestrator.analysis.scaling import ScalingRow

WIDTH_IN = 7.6
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
# Monitor keys (runs/<id>/monitor.jsonl) and how their panels are titled.
MONITOR_SERIES = (("cpu_percent", "CPU (%)"), ("memory_mb", "Memory (MB)"),
                  ("gpu_util", "GPU utilisation (%)"), ("gpu_memory_mb", "GPU memory (MB)"),
                  ("gpu_power_w", "GPU power (W)"))
GPU_FIELDS = {"gpu_util": ("util_percent", lambda v: sum(v) / len(v)),
              "gpu_memory_mb": ("memory_mb", sum), "gpu_power_w": ("power_w", sum)}


@dataclass
class Chart:
    id: str
    title: str
    caption: str
    svg: Markup


def _style(chart_id: str) -> dict:
    from cycler import cycler  # matplotlib's own dependency

    return {"svg.hashsalt": f"dlbench-{chart_id}", "svg.id": f"chart-{chart_id}",
            "svg.fonttype": "none", "font.family": ["DejaVu Sans"], "font.size": 9,
            "text.parse_math": False, "axes.spines.top": False, "axes.spines.right": False,
            "axes.grid": True, "grid.color": "#e5e5e5", "axes.axisbelow": True,
            "axes.prop_cycle": cycler(color=PALETTE)}


def figure(panels: int = 1, height: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def render(chart_id: str, title: str, caption: str, draw) -> Chart:
    """Run draw() under the chart's rc settings and serialise the figure it returns."""
    import matplotlib

    with matplotlib.rc_context(_style(chart_id)):
        fig = draw()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]                     # drop the XML prolog and DOCTYPE
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', svg, count=1)
    return Chart(chart_id, title, caption, Markup(svg))  # matplotlib escapes its own text


LEGEND_COLUMNS = 2  # run ids of matrix suites run to ~60 characters


def legend_height(entries: int) -> float:
    """Inches the legend under a figure takes (see legend_below)."""
    return 0.17 * -(-entries // LEGEND_COLUMNS)


def legend_below(fig, axes) -> None:
    """One legend for all panels, under them: a suite of dozens of runs must not squeeze
    the plots away (a legend inside an axis grows with every run)."""
    entries: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside lower center",
               ncol=LEGEND_COLUMNS, fontsize=7, frameon=False)


def _colors(groups: list[Group]) -> dict[str, str]:
    return {g.key: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}


# ---------------------------------------------------------------------------
# The charts
# ---------------------------------------------------------------------------

def throughput(groups: list[Group]) -> Chart | None:
    groups = [g for g in groups if g.values("images_per_s")]
    if not groups:
        return None
    repeats = any(len(g.values("images_per_s")) > 1 for g in groups)

    def draw():
        fig, (ax,) = figure(height=0.9 + 0.42 * len(groups))
        colors = _colors(groups)
        labels: list[str] = []
        means: list[float] = []
        errors: list[list[float]] = [[], []]
        for g in groups:  # each with values: its mean is a number
            mean, ci = cast(float, g.mean("images_per_s")), g.ci95("images_per_s")
            labels.append(g.label)
            means.append(mean)
            errors[0].append(mean - ci[0] if ci else 0)
            errors[1].append(ci[1] - mean if ci else 0)
        y = range(len(groups))
        ax.barh(y, means, color=[colors[g.key] for g in groups],
                xerr=errors if repeats else None, capsize=4, error_kw={"elinewidth": 1})
        for i, value in enumerate(means):
            ax.text(value, i, f" {value:,.0f}", va="center", ha="left", fontsize=8)
        ax.set_yticks(list(y), labels)
        ax.invert_yaxis()
        ax.set_xlabel("training images per second (higher is better)")
        ax.margins(x=0.15)
        ax.grid(axis="y", visible=False)
        return fig

    caption = ("Mean over repeats; whiskers: 95% t-interval of the mean." if repeats
               else "One run per entry: run the suite with `repeats` for confidence intervals.")
    return render("throughput", "Throughput per framework", caption, draw)


def convergence(groups: list[Group]) -> Chart | None:
    curves = [g for g in groups if _epoch_curve(g, "loss")]
    if not curves or max(len(_epoch_curve(g, "loss")) for g in curves) < 2:
        return None

    def draw():
        fig, (loss_ax, acc_ax) = figure(panels=2, height=3.0 + legend_height(len(curves)))
        colors = _colors(groups)
        for g in curves:
            for ax, field in ((loss_ax, "loss"), (acc_ax, "test_accuracy")):
                points = _epoch_curve(g, field) or (_epoch_curve(g, "accuracy") if ax is acc_ax else [])
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, color=colors[g.key], label=g.label)
        loss_ax.set(title="Training loss", xlabel="epoch")
        acc_ax.set(title="Test accuracy", xlabel="epoch")
        for ax in (loss_ax, acc_ax):
            ax.xaxis.get_major_locator().set_params(integer=True)
        legend_below(fig, (loss_ax, acc_ax))
        return fig

    return render("convergence", "Convergence: loss and accuracy per epoch",
                   "Mean over repeats, per epoch. Test accuracy is measured after each epoch.", draw)


def _epoch_curve(group: Group, field: str) -> list[tuple[int, float]]:
    by_epoch: dict[int, list[float]] = {}
    for row in group.rows:
        for epoch in row["metrics"].get("epochs") or []:
            if epoch.get(field) is not None:
                by_epoch.setdefault(epoch["epoch"], []).append(float(epoch[field]))
    return [(e, sum(v) / len(v)) for e, v in sorted(by_epoch.items())]


def monitor_timelines(rows: list[dict]) -> Chart | None:
    """CPU/memory/GPU over time per run, from runs/<id>/monitor.jsonl when recorded."""
    runs = [r for r in rows if r.get("monitor")]
    present = [(key, title) for key, title in MONITOR_SERIES
               if any(_series(r["monitor"], key) for r in runs)]
    if not present:
        return None

    def draw():
        fig, axes = figure(panels=len(present), height=2.8 + legend_height(len(runs)))
        for ax, (key, title) in zip(axes, present):
            for index, row in enumerate(runs):
                points = _series(row["monitor"], key)
                if points:
                    ax.plot(*zip(*points), linewidth=1, color=PALETTE[index % len(PALETTE)],
                            label=row["run_id"])
            ax.set(title=title, xlabel="seconds since start")
        legend_below(fig, axes)
        return fig

    return render("monitor", "Resource use over time",
                   "Sampled on the host while each run lasted (runs/<id>/monitor.jsonl).", draw)


def _series(samples: list[dict], key: str) -> list[tuple[float, float]]:
    sampled = [(s.get("t"), _sample_value(s, key)) for s in samples]
    points = [(float(t), float(v)) for t, v in sampled
              if isinstance(t, (int, float)) and isinstance(v, (int, float))]
    if not points:
        return []
    start = points[0][0]
    return [(t - start, v) for t, v in points]


def _sample_value(sample: dict, key: str):
    """A flat key (cpu_percent, gpu_util, ...) or, for GPU keys, the monitor's per-GPU
    list (gpus: [{util_percent, memory_mb, power_w}]): mean utilisation, summed memory/power."""
    if key in sample or not key.startswith("gpu_") or not isinstance(sample.get("gpus"), list):
        return sample.get(key)
    field, combine = GPU_FIELDS[key]
    values = [g.get(field) for g in sample["gpus"] if isinstance(g, dict)]
    values = [v for v in values if isinstance(v, (int, float))]
    return combine(values) if values else None


def time_vs_code(groups: list[Group]) -> Chart | None:
    points = [g for g in groups if g.lines_of_code() and g.mean("train_total_s") is not None]
    if len(points) < 2:
        return None

    def draw():
        fig, (ax,) = figure(height=3.2)
        colors = _colors(groups)
        for g in points:
            ax.scatter(g.lines_of_code(), g.mean("train_total_s"), s=40, color=colors[g.key], zorder=3)
            ax.annotate(g.label, (g.lines_of_code(), g.mean("train_total_s")),
                        textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set(xlabel="lines of code of the implementation (fewer is easier)",
               ylabel="train time (s, lower is faster)")
        ax.margins(0.25)
        return fig

    return render("time-vs-code", "Speed vs ease of coding",
                   "Bottom left is best: fast to train and short to write.", draw)


def cpu_vs_gpu(groups: list[Group]) -> Chart | None:
    pairs: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        pairs.setdefault((g.framework, g.api, g.batch_size), {})[g.device] = g
    both = {k: v for k, v in pairs.items() if {"cpu", "gpu"} <= set(v)}
    if not both:
        return None

    def draw():
        fig, (ax,) = figure(height=3.0)
        names = [f"{fw}/{api}" + (f" b{bs}" if len({k[2] for k in both}) > 1 else "")
                 for fw, api, bs in both]
        for offset, device in ((-0.2, "cpu"), (0.2, "gpu")):
            values = [v[device].mean("images_per_s") for v in both.values()]
            ax.bar([i + offset for i in range(len(both))], values, width=0.4, label=device.upper())
        ax.set_xticks(range(len(both)), names)
        ax.set_ylabel("training images per second")
        ax.legend(frameon=False)
        ax.grid(axis="x", visible=False)
        return fig

    return render("cpu-vs-gpu", "CPU vs GPU", "Same framework, API and batch size on each device.", draw)


def batch_sweep(groups: list[Group]) -> Chart | None:
    if len({g.batch_size for g in groups}) < 2:
        return None
    lines: dict[tuple, list[Group]] = {}
    for g in groups:
        lines.setdefault((g.framework, g.api, g.device), []).append(g)

    def draw():
        fig, (tp_ax, acc_ax) = figure(panels=2)
        devices = len({k[2] for k in lines}) > 1
        for index, ((fw, api, device), members) in enumerate(lines.items()):
            members = sorted(members, key=lambda g: cast(int, g.batch_size))  # a sweep sets them all
            label = f"{fw}/{api}" + (f" {device}" if devices else "")
            batch = [g.batch_size for g in members]
            color = PALETTE[index % len(PALETTE)]
            tp_ax.plot(batch, [g.mean("images_per_s") for g in members], marker="o", color=color,
                       label=label)
            acc_ax.plot(batch, [g.mean("test_accuracy") for g in members], marker="o", color=color,
                        label=label)
        for ax, title in ((tp_ax, "Throughput (img/s)"), (acc_ax, "Test accuracy")):
            ax.set_xscale("log", base=2)
            ax.set(title=title, xlabel="batch size")
        acc_ax.legend(fontsize=8, frameon=False)
        return fig

    return render("batch-sweep", "Batch-size sweep",
                   "Runs that differ in batch size: throughput and accuracy against it.", draw)


def scaling(rows: list[ScalingRow]) -> Chart | None:
    """Global throughput against workers, one line per framework/api (orchestrator.analysis
    .scaling's label), from its 1-worker baseline T1 at 1; dashed: the ideal S x T1. Shown in
    the report's Scaling section, not among the other charts."""
    lines: dict[str, list[ScalingRow]] = {}
    for row in rows:
        if row["images_per_s"] is not None:
            lines.setdefault(row["label"], []).append(row)
    if not lines:
        return None

    def draw():
        fig, (ax,) = figure(height=3.2 + legend_height(len(lines) + 1))
        for index, (label, members) in enumerate(lines.items()):
            color = PALETTE[index % len(PALETTE)]
            base = members[0]["baseline_images_per_s"]
            points = sorted((r["workers"], cast(float, r["images_per_s"])) for r in members)
            if base:
                points.insert(0, (1, base))
                widest = max(r["workers"] for r in members)
                ax.plot([1, widest], [base, widest * base], linestyle="--", linewidth=1, color=color)
            ax.plot(*zip(*points), marker="o", markersize=4, color=color, label=label)
        ax.plot([], [], linestyle="--", linewidth=1, color="#7f7f7f", label="ideal: S × T1 (1-worker rate)")
        workers = sorted({1, *(r["workers"] for r in rows)})
        ax.set_xscale("log", base=2)
        ax.set_xticks(workers, [str(w) for w in workers])
        ax.minorticks_off()
        ax.set(xlabel="workers (world size S)", ylabel="global training images per second")
        ax.set_ylim(bottom=0)
        legend_below(fig, [ax])
        return fig

    return render("scaling", "Throughput against workers",
                  "Median over repeats of each run's global throughput (all ranks' images over the slowest "
                  "rank's train time); at 1 worker, the baseline. Dashed: ideal linear scaling.", draw)


def all_charts(groups: list[Group], rows: list[dict]) -> list[Chart]:
    made = [throughput(groups), convergence(groups), time_vs_code(groups), cpu_vs_gpu(groups),
            batch_sweep(groups), monitor_timelines(rows)]
    return [c for c in made if c is not None]
