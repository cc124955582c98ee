"""Build the PyTorch CPU image for real on the local base and use it; build the Chainer
CPU image by hand with the command `dlbench images build --print` gives.

The first build downloads the locked packages (about 100 MB besides the torch wheel,
which comes from the wheelhouse: DLBENCH_WHEELHOUSE or the host pip's find-links)
and takes a minute or two; later runs reuse the image (that is one of the tests).
The by-hand build is Chainer's, the quickest image to build (about 20 s: no Debian
packages, a few small wheels and one pure-Python sdist).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import images
from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.images import context
from orchestrator.paths import REPO_ROOT
from tests.integration.helpers import dlbench

pytestmark = pytest.mark.docker

FASHION_MNIST = Path(os.environ.get("DLBENCH_TEST_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
RUN_KW = {"network_disabled": True, "read_only": True, "tmpfs": {"/tmp": "rw,size=512m"},
          "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}


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
    assert info.lock_sha256 == sha256_file(fl.lock)
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
    monkeypatch.setattr(images.spec, "IMAGE_REPO_PREFIX", "dlbench-test-missing")
    with pytest.raises(DlbenchError, match=r"is not built.*dlbench images build pytorch"):
        images.require_image(docker_client, "pytorch", "cpu")


# -- a build by hand, from the repository root ---------------------------------------

def docker_cli() -> str:
    exe = shutil.which("docker")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the docker CLI is missing (CI installs docker.io)")
        pytest.skip("the docker CLI is not installed")
    return exe


def test_a_build_from_the_root_sends_what_dlbench_builds_send(docker_client, base_image):
    """The real docker CLI, from the repository root with its .dockerignore, sends exactly
    the files ensure_image puts in its own context (every image's), and build-inputs/ if
    present: .venv/, results/, .git/, tests/ and caches stay home."""
    tag = "dlbench-test/context-probe:latest"
    probe = f"FROM {base_image}\nCOPY . /ctx/\n"
    proc = subprocess.run([docker_cli(), "build", "-f", "-", "-t", tag, "."], cwd=REPO_ROOT, input=probe,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        out = docker_client.containers.run(tag, ["find", "/ctx", "-type", "f"], entrypoint=[],
                                           remove=True, network_disabled=True).decode()
    finally:
        docker_client.images.remove(tag, force=True)
    sent = {line.removeprefix("/ctx/") for line in out.split()}
    expected = {rel for fw, spec in images.load_images().items() for fl in spec.flavours
                for rel in context.context_files(*images.get_spec(fw, fl))}
    inputs = REPO_ROOT / context.BUILD_INPUTS
    expected |= {p.relative_to(REPO_ROOT).as_posix() for p in inputs.rglob("*") if p.is_file()}
    assert sent == expected, {"sent, not needed": sorted(sent - expected),
                              "needed, not sent": sorted(expected - sent)}


def test_the_printed_command_builds_the_image(docker_client, build_options, tmp_path):
    """`dlbench images build --print chainer/cpu`, run with bash as printed (but for a test
    tag, so the real image is left alone), in a repository root that holds what the previous
    test shows a build sends, plus the build-inputs/ a `dlbench images build` would make
    (the CA of a TLS-intercepting proxy, wheels)."""
    tag = "dlbench-test/by-hand:chainer-cpu"
    env = {"DLBENCH_BASE_IMAGE": build_options.base_image or ""}
    proc = dlbench("images", "build", "--print", "chainer/cpu", env=env)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip()
    real_tag = images.image_tag("chainer", "cpu")
    assert f" -t {real_tag} " in printed
    root = tmp_path / "repo"
    spec, fl = images.get_spec("chainer", "cpu")
    for rel, path in context.context_files(spec, fl).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / rel)
    shutil.copy(REPO_ROOT / ".dockerignore", root)
    context.write_build_inputs(fl, build_options, root / context.BUILD_INPUTS)
    proc = subprocess.run(["bash", "-c", printed.replace(f" -t {real_tag} ", f" -t {tag} ")], cwd=root,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    try:
        image = docker_client.images.get(tag)
        labels = image.attrs["Config"]["Labels"]
        assert labels["org.dlbench.framework"] == "chainer" and labels["org.dlbench.flavour"] == "cpu"
        assert labels["org.dlbench.lock-sha256"] == sha256_file(fl.lock)
        probe = "import chainer, workloads.chainer_eager; print(chainer.__version__)"
        out = docker_client.containers.run(tag, ["-c", probe], entrypoint=["python"],
                                           remove=True, **RUN_KW).decode().split()
        assert out == [spec.framework_version]
    finally:
        docker_client.images.remove(tag, force=True)
