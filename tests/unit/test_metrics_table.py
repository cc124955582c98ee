"""The metrics table (orchestrator/results/metrics.py): one row per metric, and every view
(summary.json, statistics over repeats, the report, summary.csv, `dlbench compare`) loops
over it, so that a new metric is one row there plus the workload and its schema."""
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from contract.schemas import load_schema
from orchestrator import report
from orchestrator.analysis.summary import summarize
from orchestrator.execution import runner
from orchestrator.paths import ORCHESTRATOR_SCHEMA_DIR
from orchestrator.report import compare
from orchestrator.results import bundle, metrics
from orchestrator.results.directory import ResultsDir, schema_error
from orchestrator.results.metrics import Metric

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bundle-small"
PEAK_MEMORY = Metric("peak_rss_mb", ("memory", "peak_rss_mb"), "Peak memory", "MB", higher_is_better=False,
                     digits=0, column=True, best=True, statistics=True, compare=True)


def repeated(tmp_path: Path, name: str, peaks: dict[str, list[float]]) -> Path:
    """The fixture bundle with each run repeated, one peak memory per repeat, unsealed."""
    path = tmp_path / name
    shutil.copytree(FIXTURE, path)
    for generated in ("summary.json", "summary.csv", "report.html", "MANIFEST.sha256"):
        (path / generated).unlink()
    for run_id, values in peaks.items():
        source = path / "runs" / run_id
        for index, peak in enumerate(values, start=1):
            target = path / "runs" / f"{run_id}-r{index}"
            shutil.copytree(source, target)
            document = json.loads((target / "metrics.json").read_text())
            document["memory"]["peak_rss_mb"] = peak
            (target / "metrics.json").write_text(json.dumps(document))
        shutil.rmtree(source)
    return path


def test_a_new_row_reaches_summary_statistics_report_csv_and_compare(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, PEAK_MEMORY))
    path = repeated(tmp_path, "a", {"01-pytorch-eager": [400.0, 410.0, 405.0],
                                    "02-tensorflow-keras": [380.0, 390.0, 385.0]})
    runner._finish(ResultsDir(path))  # summary.json, report.html, summary.csv, as after a suite

    summary = json.loads((path / "summary.json").read_text())
    assert schema_error("summary", summary) is None
    assert [e["peak_rss_mb"] for e in summary["runs"]][:3] == [400.0, 410.0, 405.0]
    group = summary["statistics"]["groups"][0]
    assert group["metrics"]["peak_rss_mb"]["median"] == 405.0
    assert summary["statistics"]["comparisons"][0]["metrics"]["peak_rss_mb"]["mean_b"] == 385.0

    header = next(csv.reader(io.StringIO((path / "summary.csv").read_text())))
    assert header.index("peak_rss_mb") == header.index("lines_of_code") + 1 < header.index("message")

    html = (path / "report.html").read_text()
    assert html.index("<th>Lines of code</th>") < html.index("<th>Peak memory (MB)</th>")  # column
    assert '<td class="num best">380</td>' in html                          # lowest marked best
    assert "<td>peak memory (MB)</td>" in html                              # statistics row
    rows = len(metrics.statistics_metrics())  # the new row joined the framework's rowspan
    assert f'rowspan="{rows}"' in html and f'rowspan="{rows - 1}"' not in html
    assert html == report.render(report.load(path))

    result = compare.compare_contexts(report.load(path), report.load(path), "a", "a")
    assert [mc.metric for mc in result.matches[0].metrics][-1] == "peak_rss_mb"
    assert "Peak memory (MB)" in compare.format_text(result)
    assert "<td>Peak memory (MB)</td>" in compare.render_html(result)


def test_without_the_row_nothing_shows_it(tmp_path):
    path = repeated(tmp_path, "a", {"01-pytorch-eager": [400.0, 410.0]})
    summary = summarize(report.load(path)["runs"])
    assert "peak_rss_mb" not in summary["runs"][0]
    assert "peak_rss_mb" not in bundle.summary_csv(summary).splitlines()[0]
    assert "Peak memory" not in report.render(report.load(path))


def test_every_path_is_in_the_metrics_schema():
    schema = load_schema("metrics")
    for metric in metrics.METRICS:
        node = schema
        for key in metric.path:
            node = node["properties"][key]
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        assert "number" in node["type"] or node["type"] == "integer", metric.key


def test_keys_are_unique_and_the_summary_schema_names_only_table_metrics():
    keys = [m.key for m in metrics.METRICS]
    assert len(keys) == len(set(keys))
    summary_schema = json.loads((ORCHESTRATOR_SCHEMA_DIR / "summary.schema.json").read_text())
    ranged = set(summary_schema["properties"]["runs"]["items"]["properties"]) - {"run_id", "outcome", "monitor"}
    assert ranged <= {m.key for m in metrics.summary_metrics()}


def test_views_order_and_headings():
    assert [m.key for m in metrics.statistics_metrics()][0] == "images_per_s"  # the headline leads
    assert [m.key for m in metrics.compared_metrics()] == [m.key for m in metrics.statistics_metrics()]
    assert metrics.metric_named("images_per_s").heading == "Throughput (img/s)"
    assert metrics.metric_named("images_per_s").phrase == "throughput (img/s)"
    assert Metric("gpu_j", ("gpu_j",), "GPU energy", "J").phrase == "GPU energy (J)"


@pytest.mark.parametrize("flags", [{"best": True, "column": True}, {"statistics": True}, {"compare": True}])
def test_a_compared_metric_needs_a_direction(flags):
    with pytest.raises(ValueError, match="higher_is_better"):
        Metric("count", ("count",), "Count", **flags)


def test_a_column_needs_a_summary_entry():
    with pytest.raises(ValueError, match="summary"):
        Metric("x", ("x",), "X", summary=False, column=True)
