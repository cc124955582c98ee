"""The equivalence check's judgement (orchestrator/equivalence.py) on real metrics.json
files with one thing changed at a time; the real-container version, with a layer of a
real framework file changed, is tests/integration/test_equivalence_docker.py."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from contract.registry import IMPLEMENTATIONS, PARALLEL
from orchestrator.analysis import equivalence
from orchestrator.errors import DlbenchError
from orchestrator.plan.suite import load_suite

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "real-metrics"


def _row(name="pytorch-eager", **model):
    metrics = json.loads((FIXTURES / f"{name}.json").read_text())
    metrics["model"].update({"output_shape": [128, 10], "initial_loss": 2.31, **model})
    framework, api = metrics["framework"]["name"], metrics["framework"]["api"]
    return {"run_id": f"01-{framework}-{api}", "metrics": metrics, "metrics_problem": None,
            "spec": {"framework": framework, "api": api}, "record": {"outcome": "ok"}}


@pytest.mark.parametrize("name", ["pytorch-eager", "tensorflow-keras"])
def test_real_runs_pass(name):
    verdict = equivalence.judge(_row(name))
    assert verdict.ok, verdict.problems
    assert verdict.parameters == 1_669_002


@pytest.mark.parametrize("model,expected", [
    ({"parameters": 1_669_003}, "1,669,003 parameters, the spec has 1,669,002"),
    ({"output_shape": [128, 11]}, "output shape [128, 11], expected [128, 10]"),
    ({"output_shape": [128]}, "output shape [128]"),
    ({"initial_loss": 0.4}, "initial loss 0.400 outside [1.73, 2.88]"),
    ({"initial_loss": 9.0}, "initial loss 9.000 outside"),
    ({"initial_loss": None}, "initial loss missing"),
])
def test_each_mismatch_is_named(model, expected):
    verdict = equivalence.judge(_row(**model))
    assert not verdict.ok
    assert any(expected in p for p in verdict.problems), verdict.problems
    assert "MISMATCH: " + expected in equivalence.format_verdicts([verdict])


def test_non_finite_training_loss_fails():
    row = _row()
    row["metrics"]["epochs"][0]["loss"] = float("nan")
    assert "training loss is not finite" in equivalence.judge(row).problems


def test_a_run_that_did_not_finish_fails_with_its_reason():
    row = _row()
    row.update(metrics=None, metrics_problem="the workload wrote no metrics.json",
               record={"outcome": "failed", "message": None})
    verdict = equivalence.judge(row)
    assert verdict.problems == ["did not run to the end (failed: the workload wrote no metrics.json)"]


def test_output_batch_follows_a_small_test_set():
    row = _row(output_shape=[64, 10])
    row["metrics"]["dataset"]["test_samples"] = 64
    assert equivalence.judge(row).ok


def test_summary_line_counts_mismatches():
    good, bad = equivalence.judge(_row()), equivalence.judge(_row(parameters=5))
    text = equivalence.format_verdicts([good, bad])
    assert text.splitlines()[-1] == "equivalence: 1 of 2 ok, 1 mismatch(es)"


def test_rows_selection():
    assert equivalence.select_rows(None) == sorted(IMPLEMENTATIONS)
    assert equivalence.select_rows(["keras"]) == [("keras", "jax"), ("keras", "tensorflow"),
                                                  ("keras", "torch")]
    assert equivalence.select_rows(["pytorch/eager", "pytorch"]) == [("pytorch", "eager")]
    with pytest.raises(DlbenchError, match="check --only caffe: no such framework/API"):
        equivalence.select_rows(["caffe"])


def test_generated_check_suite_is_a_valid_suite(tmp_path):
    rows = equivalence.select_rows(None)
    suite = equivalence.build_check_suite(rows)
    # first the data-parallel pairs (1 and 2 workers, SGD, no dropout), then every row
    pairs = [run for run in suite.runs if "parallel" in run.spec]
    assert [(r.framework, r.api, r.workers_per_node) for r in pairs] == [
        (f, a, w) for f, a in rows if (f, a) in PARALLEL for w in (1, 2)]
    assert all(r.spec["optimizer"] == "sgd" and r.spec["dropout"] is False for r in pairs)
    assert [(r.framework, r.api) for r in suite.runs[len(pairs):]] == rows
    assert [(r.framework, r.api) for r in equivalence.build_check_suite(rows, parallel=False).runs] == rows
    for run in suite.runs[len(pairs):]:
        assert run.spec["dataset"]["train_limit"] == equivalence.CHECK_SETTINGS["train_limit"]
        assert run.spec["batch_size"] == 128 and run.spec["learning_rate"] == 0.001
        assert run.flavour == "cpu"
    # the text kept in the results is the suite that ran
    path = tmp_path / "check.yaml"
    path.write_text(suite.text)
    assert [r.spec for r in load_suite(path).runs] == [r.spec for r in suite.runs]
    gpu = equivalence.build_check_suite([("pytorch", "eager"), ("chainer", "eager")], device="gpu")
    assert [r.flavour for r in gpu.runs] == ["cuda"]  # chainer has no cuda image: left out, said
    assert gpu.warnings == ["check --device gpu: chainer/eager left out: no cuda image "
                            "(docker/images.yaml says why)"]


def test_judge_results_reads_a_results_directory(tmp_path):
    for i, model in enumerate([{}, {"parameters": 12}]):
        row = _row(**model)
        run = tmp_path / "runs" / f"0{i}-x"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(row["metrics"]))
        (run / "spec.json").write_text(json.dumps(row["spec"]))
        (run / "run.json").write_text(json.dumps(row["record"]))
    verdicts = equivalence.judge_results(tmp_path)
    assert [v.ok for v in verdicts] == [True, False]
    assert copy.deepcopy(verdicts[1].problems) == ["12 parameters, the spec has 1,669,002"]
