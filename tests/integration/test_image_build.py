"""Build the PyTorch CPU image for real on the local base and use it.

The first build downloads the locked packages (about 100 MB besides the torch wheel,
which comes from the wheelhouse: DLBENCH_WHEELHOUSE or the host pip's find-links)
and takes a minute or two; later runs reuse the image (that is one of the tests).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator import images
from orchestrator.errors import DlbenchError

pytestmark = pytest.mark.docker

FASHION_MNIST = Path(os.environ.get("DLBENCH_TEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
RUN_KW = dict(network_disabled=True, read_only=True, tmpfs={"/tmp": "rw,size=512m"},
              cap_drop=["ALL"], security_opt=["no-new-privileges"])


@pytest.fixture(scope="module")
def build_options(base_image):
    return images.BuildOptions.from_env(base_image=base_image)


@pytest.fixture(scope="module")
def pytorch_cpu(docker_client, build_options):
    lines: list[str] = []
    info = images.ensure_image(docker_client, "pytorch", "cpu", build_options, progress=lines.append)
    return info, lines


def test_image_is_labelled_and_runs_as_non_root(docker_client, pytorch_cpu, build_options):
    info, _ = pytorch_cpu
    spec, fl = images.get_spec("pytorch", "cpu")
    assert info.tag == "dlbench/pytorch:2.13.0-cpu"
    assert (info.framework, info.framework_version, info.python, info.flavour) == \
        ("pytorch", "2.13.0", "3.11", "cpu")
    assert info.lock_sha256 == images.sha256_file(fl.lock)
    assert info.base_image == build_options.base_image
    assert info.labels["org.opencontainers.image.version"] == "2.13.0-cpu"
    assert info.labels[images.LABEL_INPUTS] == info.inputs_sha256
    assert info.size_bytes > 500e6
    config = docker_client.images.get(info.tag).attrs["Config"]
    assert config["User"].split(":")[0] == "10001"
    assert config["Entrypoint"] == ["python", "-m", "workloads"]
    assert "DLBENCH_API=eager" in config["Env"] and "HOME=/tmp" in config["Env"]
    assert json.loads(json.dumps(info.to_dict()))["id"] == info.id


def test_second_call_reuses_the_image(docker_client, pytorch_cpu, build_options):
    info, _ = pytorch_cpu
    lines: list[str] = []
    again = images.ensure_image(docker_client, "pytorch", "cpu", build_options, progress=lines.append)
    assert not again.built and again.id == info.id
    assert any("up to date" in line for line in lines)
    assert images.image_status(docker_client, "pytorch", "cpu", build_options) == "current"
    assert images.require_image(docker_client, "pytorch", "cpu").id == info.id


def test_workloads_cli_runs_offline_in_the_image(docker_client, pytorch_cpu):
    info, _ = pytorch_cpu
    out = docker_client.containers.run(info.tag, ["run", "--help"], remove=True, **RUN_KW).decode()
    assert "usage: python -m workloads run" in out
    probe = ("import os, numpy, jsonschema, torch; "
             "print(os.getuid(), numpy.__version__, torch.__version__, os.environ['DLBENCH_FRAMEWORK'])")
    out = docker_client.containers.run(info.tag, ["-c", probe], entrypoint=["python"],
                                       remove=True, **RUN_KW).decode().split()
    assert out == ["10001", "2.4.6", "2.13.0+cpu", "pytorch"]


@pytest.mark.skipif(not (FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists()
                    and not (FASHION_MNIST / "t10k-labels-idx1-ubyte").exists(),
                    reason=f"Fashion-MNIST not at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
def test_short_training_run_writes_ok_metrics(docker_client, pytorch_cpu, tmp_path):
    info, _ = pytorch_cpu
    results = tmp_path / "results"
    results.mkdir()
    uid = 10001 if os.geteuid() == 0 else os.geteuid()
    if os.geteuid() == 0:
        os.chown(results, uid, uid)
    container = docker_client.containers.run(
        info.tag, ["run", "--dataset", "fashion-mnist", "--epochs", "1", "--train-limit", "1000",
                   "--test-limit", "1000", "--out", "/results/smoke"],
        user=f"{uid}:{uid}", detach=True,
        volumes={str(FASHION_MNIST): {"bind": "/data/fashion-mnist", "mode": "ro"},
                 str(results): {"bind": "/results", "mode": "rw"}}, **RUN_KW)
    try:
        code = container.wait(timeout=300)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, logs[-2000:]
    metrics = json.loads((results / "smoke" / "metrics.json").read_text())
    assert metrics["status"] == "ok", metrics.get("error")
    assert metrics["model"]["parameters"] == 1669002


def test_missing_base_image_says_how_to_make_one(docker_client):
    options = images.BuildOptions(base_image="local/dlbench-test-no-such-base:0")
    with pytest.raises(DlbenchError, match=r"not available locally.*make base-image"):
        images.ensure_image(docker_client, "tensorflow", "cpu", options)


def test_require_image_explains_a_missing_image(docker_client, monkeypatch):
    monkeypatch.setattr(images, "IMAGE_REPO_PREFIX", "dlbench-test-missing")
    with pytest.raises(DlbenchError, match=r"is not built.*dlbench images build pytorch"):
        images.require_image(docker_client, "pytorch", "cpu")
