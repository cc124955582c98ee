"""Outcome classification, the results directory and the report, from real metrics files."""
import json
import shutil
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.analysis.summary import summarize
from orchestrator.fileio import read_json_or_none
from orchestrator.results.directory import ResultsDir, classify, read_metrics, schema_error

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real-metrics"


def real(name):
    return json.loads((REAL / f"{name}.json").read_text())


def test_real_metrics_match_the_schema():
    for name in ("pytorch-eager", "tensorflow-keras"):
        assert schema_error("metrics", real(name)) is None


def test_schema_requires_timing_when_ok():
    m = real("pytorch-eager")
    del m["timing"]
    assert "timing" in schema_error("metrics", m)


@pytest.mark.parametrize("kwargs, expected", [
    ({"exit_code": 0, "metrics": "ok"}, "ok"),
    ({"exit_code": 1, "metrics": "failed"}, "failed"),
    ({"exit_code": 3, "metrics": "oom"}, "oom"),
    ({"exit_code": 137, "metrics": None, "oom_killed": True}, "oom"),
    ({"exit_code": 137, "metrics": None}, "killed"),
    ({"exit_code": 143, "metrics": None, "timed_out": True}, "timeout"),
    ({"exit_code": 0, "metrics": None}, "failed"),
])
def test_classify(kwargs, expected):
    status = kwargs.pop("metrics")
    metrics = None
    if status:
        metrics = real("pytorch-eager")
        metrics["status"] = status
    outcome, message = classify(kwargs.pop("exit_code"), metrics, "the workload wrote no metrics.json", **kwargs)
    assert outcome == expected
    assert (message is None) == (expected == "ok")


def test_read_metrics_reports_corrupt_and_invalid(tmp_path):
    path = tmp_path / "metrics.json"
    assert read_metrics(path) == (None, "the workload wrote no metrics.json")
    path.write_text('{"truncated": ')
    assert "not valid JSON" in read_metrics(path)[1]
    path.write_text('{"schema_version": 1}')
    assert "does not match the schema" in read_metrics(path)[1]


@pytest.mark.parametrize("content, why", [
    (b'{"schema_version": 1, "error": "\xff\xfe"}', "not UTF-8"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply to parse"),
], ids=["not-utf8", "deeply-nested"])
def test_read_metrics_and_read_json_or_none_report_undecodable_json(tmp_path, content, why):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    metrics, problem = read_metrics(path)
    assert metrics is None and problem is not None
    assert problem.startswith("metrics.json is not valid JSON (") and why in problem
    assert read_json_or_none(path) is None


def make_results(tmp_path):
    results = ResultsDir.create(tmp_path, "unit")
    results.write_json("plan.json", {"suite": "unit <b>", "backend": "docker", "runs": []})
    results.write_json("system.json", {"os": "Debian", "cpu": {"model": "X", "logical_cores": 2,
                                                                 "available_to_dlbench": 2}, "gpus": []})
    results.write_json("images.json", {"pytorch/cpu": {"kind": "image", "tag": "dlbench/pytorch:2.13.0-cpu",
                                                       "id": "sha256:" + "ab" * 32}})
    for run_id, name in (("01-pytorch-eager", "pytorch-eager"), ("02-tensorflow-keras", "tensorflow-keras")):
        run = results.run_dir(run_id)
        shutil.copy(REAL / f"{name}.json", run.file("metrics.json"))
        run.write_record({"run_id": run_id, "outcome": "ok", "message": None, "backend": "docker",
                          "exit_code": 0, "started_at": "t", "finished_at": "t", "wall_s": 1.0})
    bad = results.run_dir("03-pytorch-eager")
    bad.file("metrics.json").write_text("{garbage")
    bad.write_record({"run_id": "03-pytorch-eager", "outcome": "failed", "backend": "docker",
                      "message": "<script>alert(1)</script>", "exit_code": 1,
                      "started_at": "t", "finished_at": "t", "wall_s": 1.0})
    return results


def test_report_shows_every_framework_and_escapes_strings(tmp_path):
    results = make_results(tmp_path)
    html = report.render(report.load(results.path))
    for text in ("pytorch / eager", "tensorflow / keras", "1,669,002", "dlbench/pytorch:2.13.0-cpu",
                 "Test accuracy", "Throughput (img/s)", "03-pytorch-eager"):
        assert text in html, text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "unit &lt;b&gt;" in html
    pt = real("pytorch-eager")
    assert f"{pt['timing']['images_per_s']:,.0f}" in html


def test_report_is_deterministic(tmp_path):
    results = make_results(tmp_path)
    assert report.render(report.load(results.path)) == report.render(report.load(results.path))


def test_summary_has_one_entry_per_run(tmp_path):
    results = make_results(tmp_path)
    summary = summarize(report.load(results.path)["runs"])
    by_id = {r["run_id"]: r for r in summary["runs"]}
    assert by_id["01-pytorch-eager"]["parameters"] == 1_669_002
    assert by_id["03-pytorch-eager"]["outcome"] == "failed" and "images_per_s" not in by_id["03-pytorch-eager"]


def test_results_dir_refuses_unwritable_root(tmp_path):
    from orchestrator.errors import DlbenchError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DlbenchError, match="not writable"):
        ResultsDir.create(blocker / "sub", "s")


def test_two_results_dirs_in_the_same_second_do_not_collide(tmp_path):
    a = ResultsDir.create(tmp_path, "s")
    b = ResultsDir.create(tmp_path, "s")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_same_framework_twice_is_labelled_by_its_options():
    from orchestrator.analysis.groups import ok_groups

    def row(run_id, name, options):
        return {"run_id": run_id, "metrics": real(name),
                "spec": {"batch_size": 128, "options": options}}
    groups = ok_groups([row("01-pytorch-eager", "pytorch-eager", {}),
                        row("02-pytorch-eager", "pytorch-eager", {"compile": True}),
                        row("03-tensorflow-keras", "tensorflow-keras", {"jit_compile": True})])
    assert [g.label for g in groups] == ["pytorch/eager", "pytorch/eager compile=True",
                                         "tensorflow/keras"]
