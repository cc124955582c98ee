"""Nothing compiled inside the clock: every batch shape a timed call sees was seen by the
warm-up first (a tail batch of training, the test set at its full and its tail size), and the
steady-state windows synchronise the device at their edges only. Runs the real harness with a
numpy framework file that records its calls (tests/unit/recording_impl.py)."""
import json

import pytest

from contract.schemas import load_schema
from tests.unit import recording_impl
from workloads import harness


def run_recorded(tmp_path, monkeypatch, train, test, batch, epochs=2, window=5):
    monkeypatch.setitem(harness.IMPLEMENTATIONS, ("pytorch", "eager"), "tests.unit.recording_impl")
    recording_impl.CALLS.clear()
    monkeypatch.setattr(harness, "emit", lambda event, **f: recording_impl.CALLS.append(("event", event)))
    spec = harness.validate_spec({
        "schema_version": 1, "run_id": "shapes", "framework": "pytorch", "api": "eager",
        "workload": "mnist_cnn", "dataset": {"name": "fashion-mnist", "synthetic": True,
                                              "train_limit": train, "test_limit": test},
        "batch_size": batch, "epochs": epochs, "learning_rate": 0.001, "optimizer": "adam",
        "seed": 1, "device": "cpu", "warmup_steps": 2, "window_steps": window})
    assert harness.run(spec, str(tmp_path)) == harness.EXIT_OK
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    import jsonschema
    jsonschema.validate(metrics, load_schema("metrics"))
    return metrics, list(recording_impl.CALLS)


def unwarmed_shapes(calls, kinds=("train", "eval")) -> set:
    """(kind, batch size) pairs called after the warm-up that the warm-up never called;
    with kinds=("train_call", "eval_call"), call shapes (the batch sizes of one call)."""
    end = calls.index(("event", "warmup"))
    warm = {c for c in calls[:end] if c[0] in kinds}
    timed = {c for c in calls[end:] if c[0] in kinds}
    return timed - warm


@pytest.mark.parametrize("train,test,batch", [
    (1000, 300, 128),   # both tails: 104 and 44
    (1024, 256, 128),   # no tail at all
    (100, 50, 128),     # smaller than one batch: the only size is the tail
    (60, 16, 16),       # a training tail, no test tail
])
def test_every_timed_batch_shape_was_warmed_up(tmp_path, monkeypatch, train, test, batch):
    metrics, calls = run_recorded(tmp_path, monkeypatch, train, test, batch)
    assert unwarmed_shapes(calls) == set()
    assert unwarmed_shapes(calls, ("train_call", "eval_call")) == set()
    assert metrics["warmup"]["train_batch_sizes"] == harness.batch_sizes(train, batch)
    assert metrics["warmup"]["eval_batch_sizes"] == harness.batch_sizes(test, batch)


def test_the_check_fails_for_a_warm_up_of_full_batches_only(tmp_path, monkeypatch):
    """The previous harness warmed up full training batches only: the check must see that."""
    def full_batches_only(impl, clock, spec, train, test):
        (x, y), bs = train, spec["batch_size"]
        _, first = clock.time(impl.train_epoch, x[:bs], y[:bs], bs)
        return first, first, {}
    monkeypatch.setattr(harness, "warm_up", full_batches_only)
    _, calls = run_recorded(tmp_path, monkeypatch, 1000, 300, 128)
    assert unwarmed_shapes(calls) == {("train", 104), ("eval", 128), ("eval", 44)}


def test_the_check_fails_for_tail_shapes_warmed_up_in_calls_of_their_own(tmp_path, monkeypatch):
    """Every batch shape warmed up, but the tail alone in its call: a timed epoch (whole
    batches and a tail in one call) is a call shape Keras traces, and XLA compiles, anew."""
    def tails_apart(impl, clock, spec, train, test):
        (x, y), (xt, yt), bs = train, test, spec["batch_size"]
        _, first = clock.time(impl.train_epoch, x[:bs], y[:bs], bs)
        for size in harness.batch_sizes(len(x), bs):
            clock.time(impl.train_epoch, x[:size], y[:size], bs)
        for size in harness.batch_sizes(len(xt), bs):
            clock.time(impl.evaluate, xt[:size], yt[:size], bs)
        return first, first, {}
    monkeypatch.setattr(harness, "warm_up", tails_apart)
    _, calls = run_recorded(tmp_path, monkeypatch, 1000, 300, 128)
    assert unwarmed_shapes(calls) == set()
    assert unwarmed_shapes(calls, ("train_call", "eval_call")) == {("train_call", (104, 128)),
                                                                   ("eval_call", (44, 128))}


def test_steady_state_windows_synchronise_at_their_edges_only(tmp_path, monkeypatch):
    # 1000 images / 10 = 100 steps per epoch = 4 windows of 25 (none partial), 2 epochs
    metrics, calls = run_recorded(tmp_path, monkeypatch, 1000, 100, 10, epochs=2, window=25)
    steady = metrics["steady_state"]
    assert steady["windows"] == 8 and len(steady["window_s"]) == 8
    assert steady["images_per_s_median"] > 0 and steady["images_per_s_cv"] >= 0
    begin = calls.index(("event", "timed"))
    first_epoch = calls[begin:calls.index(("event", "timed"), begin + 1)]
    syncs = [i for i, c in enumerate(first_epoch) if c == ("sync",)]
    steps = [i for i, c in enumerate(first_epoch) if c[0] == "train"]
    # the clock's sync before the epoch, one per window edge (after steps 25, 50, 75, 100), the
    # clock's sync after it; none between other steps
    inner = [i for i in syncs if steps[0] < i < steps[-1]]
    assert len(syncs) == 2 + 4 and len(inner) == 3
    assert [sum(1 for s in steps if s < i) for i in inner] == [25, 50, 75]


def test_an_epoch_shorter_than_one_window_gives_no_steady_state_figure(tmp_path, monkeypatch):
    metrics, _ = run_recorded(tmp_path, monkeypatch, 100, 50, 10, epochs=1, window=20)
    assert metrics["steady_state"]["windows"] == 0
    assert metrics["steady_state"]["images_per_s_median"] is None


@pytest.mark.parametrize("error,status", [
    ("CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),                       # PyTorch
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes", "oom"),  # XLA/JAX
    ("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)", "oom"),          # cuBLAS
    ("OOM when allocating tensor with shape[8192,32,26,26]: ResourceExhaustedError", "oom"),  # TF
    ("cudaMalloc retry failed: cudaErrorMemoryAllocation", "oom"),                    # MXNet
    ("shape mismatch in dense layer", "failed"),
])
def test_a_device_out_of_memory_is_oom_with_its_peak_kept(tmp_path, monkeypatch, error, status):
    monkeypatch.setitem(harness.IMPLEMENTATIONS, ("pytorch", "eager"), "tests.unit.recording_impl")
    monkeypatch.setattr(harness, "emit", lambda event, **f: None)
    spec = harness.validate_spec({
        "schema_version": 1, "run_id": "oom", "framework": "pytorch", "api": "eager",
        "workload": "mnist_cnn", "dataset": {"name": "fashion-mnist", "synthetic": True,
                                              "train_limit": 256, "test_limit": 128},
        "batch_size": 128, "epochs": 1, "learning_rate": 0.001, "optimizer": "adam",
        "seed": 1, "device": "cpu", "options": {"raise": error}})
    code = harness.run(spec, str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["status"], code) == (status, harness.EXIT_OOM if status == "oom" else harness.EXIT_FAILED)
    if status == "oom":
        assert metrics["memory"]["peak_device_mb"] == 123.0
        assert metrics["memory"]["peak_device_kind"] == "recorded: a fixed figure"


def test_a_run_ends_with_what_happened_in_words(tmp_path, monkeypatch, capsys):
    run_recorded(tmp_path, monkeypatch, 1000, 300, 128, epochs=2)
    *_, head, where = capsys.readouterr().out.splitlines()
    assert head.startswith("dlbench: pytorch/eager mnist_cnn: ok, 2 epochs in ")
    assert "img/s" in head and head.endswith("test accuracy 0.5000 (fp32)")
    assert where == f"dlbench: metrics written to {tmp_path / 'metrics.json'}"
