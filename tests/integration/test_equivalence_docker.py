"""`dlbench check` with the real engine and every real image: every framework/API builds
the same model; and the check really fails when one framework's model differs (a real
framework file with one layer added, mounted over the image's copy).

CI checks every row on the real-data workload (mnist_cnn) plus the data-parallel pairs:
the three synthetic workloads would add 13 runs each, about 4 minutes apiece of CI's
50. The full check, every row on all four workloads, is `make check`."""
from __future__ import annotations

from pathlib import Path

import pytest

from contract.models import MODELS
from contract.registry import IMPLEMENTATIONS, PARALLEL
from orchestrator.analysis import equivalence
from orchestrator.execution.backends.docker import DockerBackend
from orchestrator.execution.runner import run_suite
from orchestrator.images import BuildOptions
from orchestrator.paths import WORKLOADS_DIR

from .helpers import dlbench, runs

pytestmark = [pytest.mark.docker, pytest.mark.framework]


CI_WORKLOADS = ["mnist_cnn"]


def test_check_passes_for_every_row_in_its_own_image(base_image, tmp_path):
    result = dlbench("check", "--backend", "docker", "--results", tmp_path,
                     *[arg for w in CI_WORKLOADS for arg in ("--workload", w)],
                     env={"DLBENCH_BASE_IMAGE": base_image}, timeout=3600)
    pairs = len(PARALLEL)  # data-parallel rows: a 1-worker and a 2-worker run each
    total = len(IMPLEMENTATIONS) * len(CI_WORKLOADS) + 2 * pairs
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert f"equivalence: {total} of {total} ok" in result.stdout
    assert f"data-parallel: {pairs} of {pairs} ok" in result.stdout
    results = next(tmp_path.iterdir())
    seen = set()
    for run in runs(results).values():
        m = run["metrics"]
        if "parallel" in m:  # the data-parallel pairs: SGD, no dropout, real MNIST
            assert m["hyperparameters"]["optimizer"] == "sgd" and m["hyperparameters"]["dropout"] is False
            continue
        seen.add((m["framework"]["name"], m["framework"]["api"], m["workload"]))
        assert m["model"]["parameters"] == MODELS[m["workload"]].parameters
        assert m["dataset"]["synthetic"] == (m["workload"] != "mnist_cnn")
        assert m["lines_of_code"] > 0 and m["options"]["data_layout"] in ("NCHW", "NHWC")
        if m["workload"] == "imdb_lstm":  # which LSTM kernel ran is on record everywhere
            assert m["options"]["lstm_kernel"], m["framework"]
    assert seen == {(f, a, w) for f, a in IMPLEMENTATIONS for w in CI_WORKLOADS}
    # the same results judged again, later, give the same answer
    again = dlbench("check", "--judge", results)
    assert again.returncode == 0
    assert f"equivalence: {total} of {total} ok" in again.stdout
    assert f"data-parallel: {pairs} of {pairs} ok" in again.stdout


class ChangedFileBackend(DockerBackend):
    """Test-only: mounts an edited copy of one workloads file over the image's own."""

    def __init__(self, client, changed: Path, **kwargs):
        super().__init__(client, **kwargs)
        self.changed = changed

    def container_config(self, run, run_dir, host_data_dir, environment):
        config = super().container_config(run, run_dir, host_data_dir, environment)
        config["volumes"][str(self.changed)] = {
            "bind": f"/opt/dlbench/workloads/{self.changed.name}", "mode": "ro"}
        return config


def test_check_fails_when_a_layer_is_changed(docker_client, base_image, tmp_path):
    source = (WORKLOADS_DIR / "pytorch_eager.py").read_text()
    original = "nn.Dropout(m.dropout), nn.Linear(m.dense_units, m.classes))"
    assert source.count(original) == 1
    changed = tmp_path / "pytorch_eager.py"  # one extra dense layer before the classifier
    changed.write_text(source.replace(original, "nn.Dropout(m.dropout), nn.Linear(m.dense_units, "
                                      "m.dense_units), nn.Linear(m.dense_units, m.classes))"))
    changed.chmod(0o644)
    backend = ChangedFileBackend(docker_client, changed,
                                 build_options=BuildOptions.from_env({"DLBENCH_BASE_IMAGE": base_image}))
    suite = equivalence.build_check_suite([("pytorch", "eager")], parallel=False)
    results = run_suite(suite, backend, tmp_path / "results", say=lambda line: None).path

    [verdict] = equivalence.judge_results(results)
    assert not verdict.ok
    assert verdict.parameters == 1_669_002 + 1024 * 1024 + 1024
    assert verdict.problems == ["2,718,602 parameters, the spec has 1,669,002"]
    # the CLI says so too, with a failing exit code
    judged = dlbench("check", "--judge", results)
    assert judged.returncode == 1
    assert "MISMATCH: 2,718,602 parameters, the spec has 1,669,002" in judged.stdout
    assert judged.stdout.splitlines()[-2] == "equivalence: 0 of 1 ok, 1 mismatch(es)"


def test_the_data_parallel_check_fails_when_workers_sum_their_gradients(docker_client, base_image, tmp_path):
    """pytorch_eager.py with its loss scaled by the number of workers before backward: DDP's
    average then becomes a sum. The 2-worker run still trains, but not what one worker trains."""
    source = (WORKLOADS_DIR / "pytorch_eager.py").read_text()
    original = "self.scaler.scale(loss).backward()"
    assert original in source
    changed = tmp_path / "pytorch_eager.py"
    changed.write_text(source.replace(original, "self.scaler.scale(loss * self.world.size).backward()"))
    changed.chmod(0o644)
    backend = ChangedFileBackend(docker_client, changed,
                                 build_options=BuildOptions.from_env({"DLBENCH_BASE_IMAGE": base_image}))
    suite = equivalence.build_check_suite([("pytorch", "eager")])
    results = run_suite(suite, backend, tmp_path / "results", say=lambda line: None).path
    judged = dlbench("check", "--judge", results)
    assert judged.returncode == 1
    assert "equivalence: 3 of 3 ok" in judged.stdout  # the model itself is the same
    (line,) = [line for line in judged.stdout.splitlines() if line.strip().startswith("pytorch/eager")]
    assert "MISMATCH: training loss" in line and "with 2 workers" in line, line
    assert judged.stdout.splitlines()[-2] == "data-parallel: 0 of 1 ok, 1 mismatch(es)"
