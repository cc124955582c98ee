"""Pieces of the in-container harness that need no framework."""
import json
import os
import re
import stat

import pytest

from contract.jsonio import write_json_atomic
from contract.models import CIFAR10_CNN, CIFAR100_CNN, IMDB_LSTM, MNIST_CNN, MODELS
from workloads import harness
from workloads.loc import logical_lines, logical_lines_of_implementation


def test_mnist_cnn_flatten_and_parameter_arithmetic():
    m = MNIST_CNN
    assert m.flatten_size() == 1600
    (_, c1, k1, _), (_, c2, k2, _) = m.conv_layers()
    conv1 = k1 * k1 * m.input_shape[2] * c1 + c1
    conv2 = k2 * k2 * c1 * c2 + c2
    dense = m.flatten_size() * m.dense_units + m.dense_units
    out = m.dense_units * m.classes + m.classes
    assert (conv1, conv2, dense, out) == (832, 18_496, 1_639_424, 10_250)
    assert conv1 + conv2 + dense + out == m.parameters == m.count_parameters() == 1_669_002


def test_cifar_cnn_layers_and_parameters():
    m = CIFAR10_CNN  # the Rosetta Stone CIFAR-10 network: 'same' convs keep 32x32, two pools
    assert list(m.conv_layers()) == [(3, 50, 3, "same"), (50, 50, 3, "same"),
                                     (50, 100, 3, "same"), (100, 100, 3, "same")]
    assert m.flatten_size() == 8 * 8 * 100
    convs = 1_400 + 22_550 + 45_100 + 90_100
    assert m.parameters == m.count_parameters() == convs + 6_400 * 512 + 512 + 512 * 10 + 10
    assert CIFAR100_CNN.parameters == CIFAR100_CNN.count_parameters() == \
        m.parameters - 5_130 + 512 * 100 + 100


def test_lstm_parameters_are_keras_single_bias_form():
    m = IMDB_LSTM
    embedding, lstm, dense = 30_000 * 125, 4 * (125 * 100 + 100 * 100 + 100), 100 * 2 + 2
    assert m.parameters == m.count_parameters() == embedding + lstm + dense == 3_840_602
    assert m.input_shape == (150,) and m.input_dtype == "int32"


def test_every_model_fits_its_dataset_and_no_other_shape():
    from contract.datasets import DATASETS, model_fits

    fits = {"mnist_cnn": "fashion-mnist", "cifar10_cnn": "cifar10", "cifar100_cnn": "cifar100",
            "imdb_lstm": "imdb"}
    for name, model in MODELS.items():
        assert model_fits(model, DATASETS[fits[name]]) is None
    assert "has (32, 32, 3) in 100" in model_fits(CIFAR10_CNN, DATASETS["cifar100"])
    assert model_fits(MNIST_CNN, DATASETS["mnist"]) is None


def test_logical_lines_skip_comments_docstrings_blank_and_continuations():
    source = '''"""Module docstring
spanning lines."""
import os  # comment

# a comment line

def f(a,
      b):
    """Doc."""
    return (a +
            b)
'''
    assert logical_lines(source) == 3


def test_every_framework_file_is_small_and_counted():
    from contract.registry import IMPLEMENTATIONS

    for module in sorted(set(IMPLEMENTATIONS.values())):
        path = os.path.join(os.path.dirname(harness.__file__), module.split(".")[1] + ".py")
        count = logical_lines_of_implementation(path)
        # a data-parallel path (distributed start-up, sharded step, barrier) adds ~40 lines;
        # keras_backends.py serves three backends
        assert 20 < count < 220, (module, count)


def test_loc_adds_framework_helpers_but_not_the_harness(tmp_path):
    (tmp_path / "harness.py").write_text("x = 1\n" * 50)
    (tmp_path / "shared_model.py").write_text("a = 1\nb = 2\n")
    (tmp_path / "fw_api.py").write_text(
        "from .harness import x\nfrom .shared_model import a\nfrom . import shared_model\nc = a\n")
    # 4 own lines + 2 of shared_model, counted once; harness.py never
    assert logical_lines_of_implementation(str(tmp_path / "fw_api.py")) == 6


def test_write_json_atomic_leaves_no_temp_and_replaces(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}')
    write_json_atomic(str(target), {"new": 1})
    assert json.loads(target.read_text()) == {"new": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_json_atomic_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        write_json_atomic(str(target), {"bad": object()})
    assert json.loads(target.read_text()) == {"old": True}


def test_write_json_atomic_never_writes_through_a_planted_link(tmp_path):
    """A workload may plant links in its run directory: at the temporary's name and at the
    target's. Neither is followed; the target becomes a regular file; the outside stays."""
    outside = tmp_path / "host"
    outside.mkdir()
    host_tmp, host_target = outside / "a.txt", outside / "b.txt"
    host_tmp.write_text("host A\n")
    host_target.write_text("host B\n")
    run = tmp_path / "run"
    run.mkdir()
    target = run / "run.json"
    os.symlink(host_tmp, f"{target}.tmp-{os.getpid()}")
    os.symlink(host_target, target)
    write_json_atomic(str(target), {"new": 1})
    assert not target.is_symlink() and json.loads(target.read_text()) == {"new": 1}
    assert (host_tmp.read_text(), host_target.read_text()) == ("host A\n", "host B\n")
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]


def test_write_json_atomic_keeps_the_mode_open_w_gives(tmp_path):
    old = os.umask(0o027)
    try:
        write_json_atomic(str(tmp_path / "a.json"), {})
        with open(tmp_path / "b.json", "w"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == \
        stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


def _spec(**over):
    spec = {"schema_version": 1, "run_id": "r1", "framework": "pytorch", "api": "eager",
            "workload": "mnist_cnn", "dataset": {"name": "mnist", "path": "/data/mnist"},
            "batch_size": 128, "epochs": 1, "learning_rate": 0.001, "optimizer": "adam",
            "seed": 1, "device": "cpu"}
    spec.update(over)
    return spec


def test_validate_spec_fills_defaults():
    full = harness.validate_spec(_spec())
    assert full["warmup_steps"] == 3 and full["dataset"]["train_split"] == "train"
    assert full["threads"] == {"intra_op": None, "inter_op": None}


@pytest.mark.parametrize("over, field", [
    ({"batch_size": 0}, "batch_size"),
    ({"framework": "caffe"}, "framework/api"),
    ({"workload": "vgg"}, "workload"),
    ({"device": "tpu"}, "device"),
    ({"surprise": 1}, "(top level)"),
])
def test_validate_spec_names_the_field(over, field):
    with pytest.raises(harness.SpecError, match=re.escape(f"spec field {field}")):
        harness.validate_spec(_spec(**over))


def test_batches_cover_everything_once():
    slices = list(harness.batches(300, 128))
    assert [(s.start, s.stop) for s in slices] == [(0, 128), (128, 256), (256, 300)]


def test_workload_cli_rejects_bad_spec_file_in_one_line(tmp_path, capsys):
    from workloads.__main__ import main

    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    assert main(["run", "--spec", str(bad)]) == harness.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("workloads: error:") and "not valid JSON" in err
