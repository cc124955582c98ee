"""Synthetic data (generated in the workload, seeded) and the workload/dataset pairing,
from the suite file to the spec the workload validates."""
import textwrap

import numpy as np
import pytest

from contract.datasets import DATASETS
from orchestrator.errors import DlbenchError
from orchestrator.execution import runner
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import schema_error
from workloads import data, harness


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_synthetic_split_has_the_real_shapes_and_is_seeded(name):
    ds = DATASETS[name]
    x, y = data.synthetic_split(ds, "train", 64, seed=7)
    assert x.shape == (64, *ds.sample_shape) and y.shape == (64,) and y.dtype == np.int64
    assert x.dtype == (np.int32 if ds.kind == "tokens" else np.float32)
    if ds.kind == "tokens":
        assert x.min() >= 0 and x.max() < ds.vocab_size
    else:
        assert 0.0 <= x.min() and x.max() <= 1.0
    again, _ = data.synthetic_split(ds, "train", 64, seed=7)
    other, _ = data.synthetic_split(ds, "train", 64, seed=8)
    test, _ = data.synthetic_split(ds, "test", 64, seed=7)
    assert np.array_equal(x, again) and not np.array_equal(x, other) and not np.array_equal(x, test)
    assert set(np.unique(y)) <= set(range(ds.classes))


def test_synthetic_split_is_capped_at_the_real_size():
    x, _ = data.synthetic_split(DATASETS["imdb"], "test", 10**9, seed=0)
    assert len(x) == 25000


def _nearest_class_mean_accuracy(ds, features):
    """A model-free learner: class means from train, nearest mean on test. Above chance
    only if the classes really differ in the generated data."""
    x, y = data.synthetic_split(ds, "train", 2000, seed=3)
    xt, yt = data.synthetic_split(ds, "test", 1000, seed=3)
    f, ft = features(x), features(xt)
    means = np.stack([f[y == c].mean(0) for c in range(ds.classes)])
    predicted = ((ft[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return (predicted == yt).mean()


def test_synthetic_images_are_learnable():
    ds = DATASETS["cifar10"]
    accuracy = _nearest_class_mean_accuracy(ds, lambda x: x.reshape(len(x), -1))
    assert accuracy > 0.9  # chance: 0.1


def test_synthetic_sequences_are_learnable_from_their_marker_words():
    ds = DATASETS["imdb"]
    bag = lambda x: np.stack([np.bincount(row, minlength=40)[:40] for row in x])  # noqa: E731
    assert _nearest_class_mean_accuracy(ds, bag) > 0.9  # chance: 0.5


def test_load_synthetic_needs_no_path():
    x, y = data.load({"name": "cifar100", "synthetic": True, "path": None}, "test", 5, seed=1)
    assert x.shape == (5, 32, 32, 3) and y.max() < 100


def _spec(**dataset):
    return {"schema_version": 1, "run_id": "r", "framework": "pytorch", "api": "eager",
            "workload": "cifar10_cnn", "dataset": {"name": "cifar10", **dataset},
            "batch_size": 8, "epochs": 1, "learning_rate": 0.001, "optimizer": "adam",
            "seed": 1, "device": "cpu"}


def test_spec_validation_of_synthetic_path_and_model_fit():
    full = harness.validate_spec(_spec(synthetic=True, path=None))
    assert full["dataset"]["synthetic"] is True and full["dataset"]["path"] is None
    with pytest.raises(harness.SpecError, match="dataset.path: needed unless dataset.synthetic"):
        harness.validate_spec(_spec(path=None))
    with pytest.raises(harness.SpecError, match="workload: workload cifar10_cnn takes inputs of "
                                                r"shape \(32, 32, 3\) in 10 classes; dataset "
                                                "imdb has"):
        harness.validate_spec({**_spec(synthetic=True), "dataset": {"name": "imdb", "synthetic": True}})
    with pytest.raises(harness.SpecError, match="dataset.name: unknown dataset 'svhn'"):
        harness.validate_spec({**_spec(), "dataset": {"name": "svhn", "path": "/data"}})


def test_suite_synthetic_runs_need_no_prepared_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "empty-cache"))
    suite = load_suite(write(tmp_path, """
        name: t
        defaults: {workload: cifar100_cnn, dataset: cifar100, synthetic: true}
        runs: [{framework: pytorch, api: eager}]
    """))
    [run] = suite.runs
    assert run.synthetic and runner.required_datasets(suite) == {}
    spec = run.spec_for("/data/cifar100")
    assert spec["dataset"] == {**spec["dataset"], "path": None, "synthetic": True}
    assert schema_error("spec", spec) is None


def test_matrix_over_real_and_synthetic_names_the_runs(tmp_path):
    suite = load_suite(write(tmp_path, """
        name: t
        defaults: {workload: imdb_lstm, dataset: imdb}
        matrix: {framework: [pytorch/eager], synthetic: [false, true]}
    """))
    assert [r.run_id for r in suite.runs] == ["01-pytorch-eager-real", "02-pytorch-eager-synthetic"]
    assert [r.synthetic for r in suite.runs] == [False, True]


@pytest.mark.parametrize("run, expected", [
    ("{framework: pytorch, api: eager, workload: cifar10_cnn}",
     "runs[0].dataset: workload cifar10_cnn takes inputs of shape (32, 32, 3) in 10 classes; "
     "dataset fashion-mnist has (28, 28, 1) in 10"),
    ("{framework: pytorch, api: eager, dataset: cifar11}",
     "runs[0].dataset: unknown dataset 'cifar11' (known: cifar10, cifar100, fashion-mnist, imdb, mnist)"),
    ("{framework: pytorch, api: eager, synthetic: yes please}", "runs[0].synthetic: 'yes please' is not of type 'boolean'"),
])
def test_workload_dataset_mismatch_is_one_line(tmp_path, run, expected):
    path = write(tmp_path, f"name: t\nruns: [{run}]\n")
    with pytest.raises(DlbenchError) as err:
        load_suite(path)
    assert str(err.value) == f"{path}: {expected}"


def _rows(rates: dict[str, float], workload="mnist_cnn", dataset="fashion-mnist"):
    """Rows as results.load_runs gives them, from a real metrics.json with chosen throughputs:
    run id -> images/s; ids ending in 'synthetic' are the synthetic twins."""
    import copy
    import json

    from orchestrator.paths import REPO_ROOT

    real = json.loads((REPO_ROOT / "tests/fixtures/real-metrics/pytorch-eager.json").read_text())
    rows = []
    for run_id, rate in rates.items():
        synthetic = run_id.split("-r")[0].endswith("synthetic")
        m = copy.deepcopy(real)
        m["timing"]["images_per_s"] = rate
        m["timing"]["data_load_s"] = 0.1 if synthetic else 0.8
        m["dataset"].update(name=dataset, synthetic=synthetic)
        spec = {"framework": "pytorch", "api": "eager", "workload": workload, "batch_size": 128,
                "options": {}, "dataset": {"name": dataset, "synthetic": synthetic}}
        rows.append({"run_id": run_id, "spec": spec, "metrics": m,
                     "record": {"outcome": "ok", "started_at": "2026-11-30T06:00:00Z"}})
    return rows


def test_input_bound_pairs_real_and_synthetic_repeats():
    from orchestrator.analysis import input_bound

    [pair] = input_bound.analyse(_rows({"01-pytorch-eager-real-r1": 880, "01-pytorch-eager-real-r2": 920,
                                        "02-pytorch-eager-synthetic-r1": 1280,
                                        "02-pytorch-eager-synthetic-r2": 1320}))
    assert pair["real_images_per_s"] == 900 and pair["synthetic_images_per_s"] == 1300
    assert pair["ratio"] == pytest.approx(900 / 1300) and pair["repeats"] == 2
    assert pair["p_value"] < 0.05 and pair["verdict"] == "input-bound" and pair["input_bound"] is True
    assert pair["real_run_ids"] == ["01-pytorch-eager-real-r1", "01-pytorch-eager-real-r2"]
    assert pair["label"] == "pytorch/eager" and pair["dataset"] == "fashion-mnist"
    assert (pair["real_data_load_s"], pair["synthetic_data_load_s"]) == (0.8, 0.1)


def test_input_bound_gap_without_repeats_or_significance_is_inconclusive():
    from orchestrator.analysis import input_bound

    [single] = input_bound.analyse(_rows({"01-pytorch-eager-real": 500, "02-pytorch-eager-synthetic": 1000}))
    assert single["verdict"] == "inconclusive" and single["input_bound"] is False
    assert single["p_value"] is None and single["repeats"] == 1
    [noisy] = input_bound.analyse(_rows({"01-pytorch-eager-real-r1": 400, "01-pytorch-eager-real-r2": 1300,
                                         "02-pytorch-eager-synthetic-r1": 1000,
                                         "02-pytorch-eager-synthetic-r2": 1100}))
    assert noisy["ratio"] < 0.9 and noisy["p_value"] > 0.05 and noisy["verdict"] == "inconclusive"


def test_input_bound_near_one_is_compute_bound_and_unpaired_runs_are_left_out():
    from orchestrator.analysis import input_bound

    [pair] = input_bound.analyse(_rows({"01-pytorch-eager-real": 980, "02-pytorch-eager-synthetic": 1000,
                                        "03-pytorch-eager-lonely-synthetic": 10}, )[:2])
    assert pair["input_bound"] is False and pair["ratio"] == pytest.approx(0.98)
    assert input_bound.analyse(_rows({"01-pytorch-eager-real": 980})) == []


def test_summary_and_report_carry_the_input_bound_check():
    from orchestrator import report
    from orchestrator.analysis.summary import summarize
    from orchestrator.results.directory import schema_error

    rows = _rows({"01-pytorch-eager-real": 500, "02-pytorch-eager-synthetic": 1000})
    summary = summarize(rows)
    assert schema_error("summary", summary) is None
    assert summary["input_bound"][0]["ratio"] == 0.5
    assert summary["input_bound"][0]["verdict"] == "inconclusive"
    assert summary["runs"][1]["synthetic"] is True and summary["runs"][0]["dataset"] == "fashion-mnist"
    html = report.render({"name": "b", "suite": "s", "backend": "docker", "system": {}, "images": {},
                          "statistics": {}, "input_bound": summary["input_bound"],
                          "runs": [{**r, "monitor": []} for r in rows]})
    assert '<h2 id="input-bound">Input-bound check</h2>' in html
    assert "inconclusive</td>" in html and "mnist_cnn / fashion-mnist (synthetic)" in html


def test_input_bound_pairs_only_runs_over_the_same_number_of_samples():
    from orchestrator.analysis import input_bound

    rows = _rows({"01-pytorch-eager-real": 500, "02-pytorch-eager-synthetic": 1000})
    rows[1]["metrics"]["dataset"]["train_samples"] += 1  # e.g. a limit above the real size
    assert input_bound.analyse(rows) == []
