"""Statistics over repeats (orchestrator.stats) and their place in summary.json / the report."""
import copy
import json
import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from orchestrator import report
from orchestrator.analysis import stats
from orchestrator.analysis.summary import summarize
from orchestrator.results.directory import ResultsDir

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real-metrics"


def test_describe_matches_textbook_values():
    d = stats.describe([10.0, 12.0, 11.0, 13.0, 9.0])
    assert d["n"] == 5 and d["median"] == 11.0 and d["mean"] == 11.0
    assert d["std"] == pytest.approx(math.sqrt(2.5))
    assert (d["q1"], d["q3"], d["iqr"]) == (10.0, 12.0, 2.0)
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4)
    assert d["ci95"] == pytest.approx([11.0 - half, 11.0 + half])
    assert d["olympic_mean"] == pytest.approx(11.0)  # 9 and 13 dropped
    assert d["cv"] == pytest.approx(math.sqrt(2.5) / 11.0)
    assert d["values"] == [10.0, 12.0, 11.0, 13.0, 9.0]  # raw values kept


def test_olympic_mean_drops_fastest_and_slowest():
    assert stats.describe([1.0, 100.0, 5.0, 6.0])["olympic_mean"] == 5.5


def test_describe_small_samples_do_not_invent_spread():
    one = stats.describe([3.0])
    assert one["median"] == 3.0 and one["std"] is None and one["ci95"] is None and one["cv"] is None
    assert stats.describe([1.0, 2.0])["olympic_mean"] is None
    assert stats.describe([]) == {"n": 0}


def test_welch_agrees_with_scipy_and_flags_significance():
    a, b = [100.0, 102.0, 101.0], [90.0, 91.0, 89.5]
    result = stats.welch(a, b)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result["p"] == pytest.approx(expected.pvalue) and result["significant"] is True
    overlapping = stats.welch([100.0, 110.0, 95.0], [101.0, 108.0, 97.0])
    assert overlapping["significant"] is False
    assert stats.welch([1.0], [2.0, 3.0])["significant"] is None  # undecidable, not a verdict


def _row(run_id, framework, api, ips, outcome="ok", batch=128, metrics_name=None):
    m = json.loads((REAL / f"{metrics_name or framework + '-' + api}.json").read_text())
    m = copy.deepcopy(m)
    m["timing"]["images_per_s"] = ips
    m["timing"]["train_total_s"] = 10_000 / ips if ips else 0.0
    spec = {"run_id": run_id, "framework": framework, "api": api, "batch_size": batch,
            "epochs": 1, "device": "cpu", "threads": {"intra_op": None, "inter_op": None},
            "repeat": int(run_id[-1]) - 1, "workload": "mnist_cnn", "optimizer": "adam",
            "learning_rate": 0.001, "seed": 42, "options": {},
            "dataset": {"name": "fashion-mnist", "train_split": "train", "train_limit": 10_000}}
    return {"run_id": run_id, "spec": spec, "record": {"outcome": outcome, "batch_size": batch},
            "metrics": m if outcome == "ok" else None}


def sweep_rows():
    return ([_row(f"01-pytorch-eager-bs128-r{i}", "pytorch", "eager", v)
             for i, v in enumerate([1000.0, 1010.0, 990.0], 1)] +
            [_row(f"02-tensorflow-keras-bs128-r{i}", "tensorflow", "keras", v)
             for i, v in enumerate([700.0, 1300.0, 705.0], 1)] +
            [_row("03-pytorch-eager-bs8192", "pytorch", "eager", 0, outcome="oom", batch=8192)])


def test_groups_comparisons_and_cv_warning():
    result = stats.analyse(sweep_rows(), cv_threshold=0.10)
    groups = {g["group"]: g for g in result["groups"]}
    assert set(groups) == {"01-pytorch-eager-bs128", "02-tensorflow-keras-bs128", "03-pytorch-eager-bs8192"}
    torch = groups["01-pytorch-eager-bs128"]
    assert torch["metrics"]["images_per_s"]["median"] == 1000.0 and not torch["warnings"]
    assert torch["timing_median"]["import_s"] is not None
    tf = groups["02-tensorflow-keras-bs128"]
    assert any(w.startswith("images_per_s: coefficient of variation") for w in tf["warnings"])
    oom = groups["03-pytorch-eager-bs8192"]
    assert oom["outcomes"] == ["oom"] and oom["batch_size"] == 8192 and oom["metrics"]["images_per_s"] == {"n": 0}
    # pytorch vs tensorflow at batch 128: the noisy TF side makes the difference not significant
    (comparison,) = [c for c in result["comparisons"] if c["batch_size"] == 128]
    ips = comparison["metrics"]["images_per_s"]
    assert ips["significant"] is False and ips["better"] is None and ips["p"] > 0.05


def test_significant_difference_names_the_better_side():
    rows = ([_row(f"01-pytorch-eager-r{i}", "pytorch", "eager", v) for i, v in enumerate([1000.0, 1010.0, 990.0], 1)] +
            [_row(f"02-tensorflow-keras-r{i}", "tensorflow", "keras", v) for i, v in enumerate([700.0, 710.0, 705.0], 1)])
    (comparison,) = stats.analyse(rows)["comparisons"]
    assert comparison["metrics"]["images_per_s"]["better"] == "01-pytorch-eager"
    assert comparison["metrics"]["train_total_s"]["better"] == "01-pytorch-eager"  # lower is better


def test_different_settings_are_not_compared():
    rows = [_row("01-pytorch-eager-bs32-r1", "pytorch", "eager", 900.0, batch=32),
            _row("02-tensorflow-keras-bs128-r1", "tensorflow", "keras", 700.0, batch=128)]
    assert stats.analyse(rows)["comparisons"] == []


def test_summary_json_keeps_runs_and_adds_statistics():
    summary = summarize(sweep_rows(), cv_threshold=0.5)
    assert [r["run_id"] for r in summary["runs"]][:1] == ["01-pytorch-eager-bs128-r1"]
    assert summary["runs"][-1]["outcome"] == "oom" and summary["runs"][-1]["batch_size"] == 8192
    assert summary["statistics"]["cv_threshold"] == 0.5
    assert len(summary["statistics"]["groups"]) == 3
    json.dumps(summary)  # plain JSON


def test_report_shows_statistics_comparisons_and_oom_batch(tmp_path):
    results = ResultsDir.create(tmp_path, "unit")
    results.write_json("plan.json", {"suite": "unit", "backend": "docker", "runs": [],
                                     "statistics": {"cv_threshold": 0.1}})
    for row in sweep_rows():
        run_dir = results.run_dir(row["run_id"])
        (run_dir.path / "spec.json").write_text(json.dumps(row["spec"]))
        record = {"schema_version": 1, "run_id": row["run_id"], "outcome": row["record"]["outcome"],
                  "backend": "docker", "started_at": "x", "finished_at": "y", "wall_s": 1.0,
                  "batch_size": row["spec"]["batch_size"], "resources": {"memory": "1g"},
                  "message": "killed by the kernel's out-of-memory killer" if row["metrics"] is None else None}
        run_dir.write_record(record)
        if row["metrics"]:
            (run_dir.path / "metrics.json").write_text(json.dumps(row["metrics"]))
    html = report.render(report.load(results.path))
    for text in ("Statistics over repeats", "Olympic mean", "Framework against framework",
                 "not significant", "coefficient of variation", "Memory overflows", "8,192"):
        assert text in html, text
