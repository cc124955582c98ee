"""The framework-free parts of the precision and steady-state work in the framework files:
Keras' step-counting callback (with a stand-in keras module), the dtype policy table, and
a static check that every training loop counts its steps into the steady-state windows."""
import ast
import threading
import types

import pytest

from contract.registry import IMPLEMENTATIONS, PRECISION_POLICIES
from orchestrator.paths import REPO_ROOT
from workloads import harness, keras_fit
from workloads.keras_model import mixed_policy


class _Keras2Callback:
    """keras.callbacks.Callback as Keras 2 has it: its __init__ sets _supports_tf_logs False."""

    def __init__(self):
        self._supports_tf_logs = False


FAKE_KERAS = types.SimpleNamespace(callbacks=types.SimpleNamespace(Callback=_Keras2Callback))


def test_step_counter_is_async_safe_and_takes_tensor_logs():
    counter = keras_fit.step_counter(FAKE_KERAS, harness.StepWindows(5, lambda: None))
    assert counter.async_safe is True  # Keras 3: dispatched off the main thread
    assert counter._supports_tf_logs is True  # Keras 2: no per-step conversion of the logs


def test_step_counter_counts_every_step_from_concurrent_threads():
    """Keras 3 may run several steps' callbacks at once; none may be lost or double counted."""
    synced = []
    windows = harness.StepWindows(5, lambda: synced.append(1))
    counter = keras_fit.step_counter(FAKE_KERAS, windows)
    windows.begin()
    start = threading.Barrier(8)

    def steps():
        start.wait()
        for _ in range(50):
            counter.on_train_batch_end(0, {})

    threads = [threading.Thread(target=steps) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    windows.end()
    assert len(windows.window_s) == 8 * 50 // 5
    assert synced == []  # sync=False: the callback never synchronises the device itself


def test_step_counter_counts_nothing_outside_the_timed_epochs():
    windows = harness.StepWindows(1, lambda: None)
    keras_fit.step_counter(FAKE_KERAS, windows).on_train_batch_end(0, {})
    assert windows.window_s == []


@pytest.mark.parametrize("precision, policy", [
    ("fp32", "float32"), ("tf32", "float32"), ("bf16", "mixed_bfloat16"), ("fp16", "mixed_float16")])
def test_keras_dtype_policy_per_precision(precision, policy):
    assert precision in PRECISION_POLICIES
    assert mixed_policy(precision) == policy


def _train_epoch_sources():
    for module in sorted(set(IMPLEMENTATIONS.values()) | {"workloads.tensorflow_eager"}):
        path = REPO_ROOT / "workloads" / f"{module.split('.')[1]}.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "train_epoch":
                yield path.name, ast.unparse(node)


def test_every_training_loop_counts_its_steps_into_the_windows():
    """Own loops iterate train_batches; Keras' fit and the Estimator count from a callback /
    hook. A bare batches() in train_epoch would leave the steady-state windows empty."""
    found = dict(_train_epoch_sources())
    assert len(found) >= 10, sorted(found)
    for name, source in found.items():
        assert "train_batches" in source or "fit_epoch" in source or "_StepCounter" in source, name
        assert " batches(" not in source and "(batches(" not in source, name
