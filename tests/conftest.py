"""Shared fixtures: a real Docker engine and a base image to build on.

docker_client: the engine, or a skip with the reason; under CI (CI=true) an engine
               that does not answer fails the test instead, so CI cannot pass by skipping.
mnist_test_dir: the real official MNIST test split from shared/ (../shared beside the repo).
base_image:    tag of the base for image builds: $DLBENCH_BASE_IMAGE when set, else a
               local base made earlier, else the pinned public base if it can be pulled,
               else one made here with mmdebstrap (orchestrator.images.make_base_image).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        reason = f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:200]})"
        if _in_ci():
            pytest.fail(f"{reason}; CI=true requires one (.ci/run starts dockerd)")
        pytest.skip(reason)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client):
    import docker.errors

    from orchestrator import images
    from orchestrator.errors import DlbenchError

    tag = os.environ.get("DLBENCH_BASE_IMAGE")
    if tag:
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            pytest.fail(f"DLBENCH_BASE_IMAGE={tag} is not present in the engine; "
                        "make it with `dlbench images base`")
        return tag
    try:
        docker_client.images.get(images.DEFAULT_BASE_TAG)
        return images.DEFAULT_BASE_TAG
    except docker.errors.ImageNotFound:
        pass
    public = next(iter(images.load_images()["pytorch"].flavours.values())).base
    try:
        images.resolve_base(docker_client, public)
        return public
    except DlbenchError:
        pass  # no registry: make one
    try:
        return images.make_base_image(docker_client)
    except DlbenchError as exc:
        pytest.fail(f"no base image to build on: {exc}")


@pytest.fixture(scope="session")
def mnist_test_dir() -> Path:
    """The real MNIST test split (shared/datasets/mnist-test)."""
    shared = Path(os.environ.get("DLBENCH_SHARED_DIR") or REPO.parent / "shared")
    directory = shared / "datasets" / "mnist-test"
    if not all((directory / f).is_file() for f in MNIST_TEST_FILES):
        if _in_ci():
            pytest.fail(f"{directory}: real MNIST test split missing (CI provides shared/)")
        pytest.skip(f"{directory}: real MNIST test split not available")
    return directory


@pytest.fixture()
def no_nvidia_driver():
    """For tests of the no-GPU path: that path only exists where NVML finds no driver."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return
    pynvml.nvmlShutdown()
    pytest.skip("an NVIDIA driver answers here: the no-GPU path cannot be shown")


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real registry (Debian's docker-registry, the CNCF distribution) on a free port of
    127.0.0.1, which the engine may use without TLS; its address."""
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    binary = shutil.which("docker-registry")
    if binary is None:
        if _in_ci():
            pytest.fail("docker-registry not installed; CI=true requires it (.ci/run installs it)")
        pytest.skip("docker-registry not installed (apt-get install docker-registry)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path_factory.mktemp("registry")
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {root}/data}}\n"
                      f"  delete: {{enabled: true}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "registry.log", "wb"))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"docker-registry did not answer: {(root / 'registry.log').read_text()[-500:]}")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


SLURM_DEFAULT_CONF = Path("/var/tmp/dlbench-slurm/slurm.conf")  # where tests/slurm/cluster-up.sh puts it


@pytest.fixture(scope="session")
def slurm_conf() -> str | None:
    """The test cluster's slurm.conf ($SLURM_CONF, else where cluster-up.sh writes it), once
    its controller answers; else a skip, or under CI a failure."""
    conf = os.environ.get("SLURM_CONF") or (str(SLURM_DEFAULT_CONF) if SLURM_DEFAULT_CONF.exists() else None)
    problem = None
    if conf is None or shutil.which("sbatch") is None:
        problem = "no Slurm cluster here (tests/slurm/cluster-up.sh starts one, as root)"
    else:
        os.environ["SLURM_CONF"] = conf
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
        if " is UP" not in ping.stdout:
            problem = f"the test cluster's controller does not answer ({ping.stdout.strip() or ping.stderr.strip()})"
    if problem:
        if _in_ci():
            pytest.fail(f"{problem}; CI=true requires it (.ci/run starts it)")
        pytest.skip(problem)
    return conf
