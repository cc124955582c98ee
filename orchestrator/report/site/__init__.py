"""`dlbench site`: one static, offline site over many bundles, from many machines and dates.

  index.html                 the machines (CPU, cores, GPUs, driver), the bundles (suite,
                             date, verification, signer) and the workloads
  workloads/<slug>.html      per workload, a leaderboard of machine × framework/API ×
                             precision by throughput, with 95 % intervals over repeats
  machines.html              machine against machine: the same experiment on two, B / A
  bundles/<slug>/index.html  a bundle's verification lines, signature and machine
  bundles/<slug>/report.html its report, rendered again from its files

Same bundles, same bytes: nothing depends on the clock, the host, where a bundle lies or
the order they were given; every name is escaped (jinja2 autoescape) and file names are
made from content (orchestrator.report.site.bundles.slugify plus a digest). Pages load
nothing (CSS and SVG are inline). A bundle that does not verify is shown, marked, and
never ranked. Never writes anywhere but the output directory (site.output).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import report
from orchestrator.errors import DlbenchError
from orchestrator.report import charts
from orchestrator.report.site import bundles, output, views
from orchestrator.report.site.bundles import BundleRecord, Entry
from orchestrator.results.metrics import metric_named

CHART_ROWS = 40   # bars in a leaderboard's chart; the table below it lists every entry
PROBLEM_LINES = 50  # verification lines shown on a bundle's page (`dlbench verify` has all)


@dataclass
class Site:
    path: Path
    bundles: list[BundleRecord]
    machines: list[views.MachineView]
    leaderboards: list[views.Leaderboard]


def build(sources: list[Path], out: Path, signers: Path | None = None,
          say: Callable[[str], None] = lambda line: None) -> Site:
    """Read, verify and render every bundle, then write the site as `out` in one rename."""
    sources = [Path(s) for s in sources]
    if not sources:
        raise DlbenchError("no bundle given; give one or more results directories or .tar.gz files")
    output.check_target(out, sources)  # before the work of reading
    if signers is not None:
        bundles.require_signers(signers)
    records: dict[tuple[str, str], BundleRecord] = {}
    for source in sources:
        record = bundles.read(source, signers)
        if (record.name, record.digest) in records:
            raise DlbenchError(f"{source}: the same bundle as one given before it; give each once")
        records[(record.name, record.digest)] = record
        say(f"  {'verified' if record.trusted else 'NOT verified'}: {record.name}"
            + ("" if record.trusted else f" ({_why_untrusted(record)})"))
    listed = views.sorted_bundles(list(records.values()))
    site = Site(out, listed, views.machines(listed), views.leaderboards(listed))
    output.write_site(out, render(site), sources)
    return site


def _why_untrusted(record: BundleRecord) -> str:
    if record.problems:
        more = f"; and {len(record.problems) - 1} more" if len(record.problems) > 1 else ""
        return f"{record.problems[0]}{more}"
    return f"signature: {record.signature.get('message') or 'does not verify'}"


def render(site: Site) -> dict[str, bytes]:
    """Every page of the site: relative path -> bytes."""
    env = report.jinja_environment()
    env.filters.update(date=_date)
    common = {"site": site, "metrics": bundles.leaderboard_metrics(), "metric_named": metric_named,
              "machine_index": {m.key: i + 1 for i, m in enumerate(site.machines)}}
    pairs = views.machine_pairs(site.machines)
    pages = {"index.html": env.get_template("site-index.html.j2").render(
                 **common, root="", page="index", pairs=pairs),
             "machines.html": env.get_template("site-machines.html.j2").render(
                 **common, root="", page="machines", pairs=pairs)}
    for board in site.leaderboards:
        pages[f"workloads/{board.slug}.html"] = env.get_template("site-workload.html.j2").render(
            **common, root="../", page="workload", board=board, chart=leaderboard_chart(board))
    for record in site.bundles:
        pages[f"bundles/{record.slug}/index.html"] = env.get_template("site-bundle.html.j2").render(
            **common, root="../../", page="bundle", record=record, problem_lines=PROBLEM_LINES)
        if record.report_html is not None:
            pages[f"bundles/{record.slug}/report.html"] = record.report_html
    return {rel: text.encode("utf-8") for rel, text in pages.items()}


def _date(value: str | None) -> str:
    """'2026-11-22 00:24' from an ISO time as recorded; anything else as it is."""
    if not value:
        return "–"
    text = str(value)
    if len(text) >= 16 and text[10] == "T":
        return f"{text[:10]} {text[11:16]}"
    return text


def entry_label(entry: Entry) -> str:
    g = entry.group
    batch = f" b{g.batch_size}" if g.batch_size else ""
    return f"{g.framework}/{g.api} {entry.precision} {g.device}{batch} · {_date(entry.bundle.started_at)[:10]}"


def leaderboard_chart(board: views.Leaderboard) -> charts.Chart | None:
    """The ranked entries' mean throughput as bars, coloured by machine, with the 95 %
    t-interval of the mean as whiskers where there are repeats."""
    metric = bundles.leaderboard_metrics()[0]
    shown = [e for e in board.ranked if e.mean(metric.key) is not None][:CHART_ROWS]
    if not shown:
        return None
    machine_keys = sorted({e.machine.key for e in shown}, key=lambda k: next(
        e.machine.label for e in shown if e.machine.key == k))

    def draw():
        fig, (ax,) = charts.figure(height=1.2 + 0.3 * len(shown) + charts.legend_height(len(machine_keys)))
        for index, key in enumerate(machine_keys):
            rows = [(i, e) for i, e in enumerate(shown) if e.machine.key == key]
            means = [e.mean(metric.key) for _, e in rows]
            cis = [e.figures[metric.key].get("ci95") for _, e in rows]
            errors = [[m - ci[0] if ci else 0 for m, ci in zip(means, cis)],
                      [ci[1] - m if ci else 0 for m, ci in zip(means, cis)]]
            ax.barh([i for i, _ in rows], means, color=charts.PALETTE[index % len(charts.PALETTE)],
                    xerr=errors if any(cis) else None, capsize=3, error_kw={"elinewidth": 1},
                    label=rows[0][1].machine.label)
        for i, e in enumerate(shown):  # the figure right of its whisker
            mean, ci = e.mean(metric.key), e.figures[metric.key].get("ci95")
            ax.text(max(mean, ci[1]) if ci else mean, i, f" {mean:,.0f}", va="center", ha="left", fontsize=7)
        ax.set_yticks(range(len(shown)), [entry_label(e) for e in shown], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.phrase}, mean over repeats (higher is better)")
        ax.margins(x=0.15)
        ax.grid(axis="y", visible=False)
        charts.legend_below(fig, [ax])
        return fig

    caption = ("Whiskers: 95% t-interval of the mean over repeats." if board.with_repeats
               else "One run per entry: run suites with `repeats` for confidence intervals.")
    more = f" The {CHART_ROWS} best of {len(board.ranked)}." if len(board.ranked) > CHART_ROWS else ""
    return charts.render(f"leaderboard-{board.slug}", f"{metric.label} by machine", caption + more, draw)
