"""The base image when the pinned one cannot be pulled, against a fake engine: a local base
made with mmdebstrap and remembered (no DLBENCH_BASE_IMAGE needed later), DLBENCH_BASE_IMAGE
winning when set, and without mmdebstrap `--backend auto` running on the local backend in
one line while `--backend docker` stops in one line. (The real engine and the real
mmdebstrap: tests/integration/test_base_auto.py.)"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

docker_errors = pytest.importorskip("docker.errors")

from orchestrator.cli import main  # noqa: E402
from orchestrator.errors import DlbenchError  # noqa: E402
from orchestrator.execution import backends  # noqa: E402
from orchestrator.execution.backends import docker as docker_module  # noqa: E402
from orchestrator.execution.backends.local import LocalBackend  # noqa: E402
from orchestrator.fileio import sha256_file  # noqa: E402
from orchestrator.images import base as base_module  # noqa: E402
from orchestrator.images import load_images  # noqa: E402
from orchestrator.plan.suite import load_suite  # noqa: E402

PINNED = next(iter(load_images(check_locks=False)["pytorch"].flavours.values())).base
NO_HOST = 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'


class FakeImages:
    """The engine's images: present ones by reference, pulls that fail (no registry)."""

    def __init__(self, present=(), pullable=()):
        self.present = {ref: self.image(ref) for ref in present}
        self.pullable = set(pullable)
        self.pulls: list[str] = []

    @staticmethod
    def image(ref, labels=None):
        return SimpleNamespace(id=f"sha256:{abs(hash(ref)):064d}"[:71], short_id=ref[:10],
                               attrs={"Config": {"Labels": labels or {}}})

    def get(self, ref):
        if ref not in self.present:
            raise docker_errors.ImageNotFound(f"No such image: {ref}")
        return self.present[ref]

    def pull(self, ref):
        self.pulls.append(ref)
        if ref not in self.pullable:
            raise docker_errors.APIError("500 Server Error", explanation=NO_HOST)
        self.present[ref] = self.image(ref)
        return self.present[ref]


def fake_client(**kwargs):
    return SimpleNamespace(images=FakeImages(**kwargs))


@pytest.fixture()
def host(monkeypatch, tmp_path):
    """No DLBENCH_BASE_IMAGE, an empty cache, and a PATH whose only programs are those a
    test puts in it (so no mmdebstrap unless a test adds one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLBENCH_BUILD_HOST_PIP", "0")
    monkeypatch.delenv("DLBENCH_BASE_IMAGE", raising=False)
    return SimpleNamespace(bin=bin_dir, cache=tmp_path / "cache")


def install_fake_mmdebstrap(host):
    exe = host.bin / "mmdebstrap"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)


def fake_make_base_image(made: list):
    """make_base_image as it is with mmdebstrap there: a tarball in the cache, imported."""
    def make(client, tag=base_module.DEFAULT_BASE_TAG, cache_tarball=None, progress=None, **_):
        tarball = Path(cache_tarball) if cache_tarball else base_module.default_base_tarball()
        if not tarball.is_file():
            tarball.parent.mkdir(parents=True, exist_ok=True)
            tarball.write_bytes(b"a Debian minbase with python3")
        client.images.present[tag] = FakeImages.image(
            tag, {base_module.LABEL_TARBALL_SHA: sha256_file(tarball)})
        made.append(tag)
        return tag
    return make


def use_engine(monkeypatch, client):
    monkeypatch.setattr(docker_module, "connect", lambda: (client, None))


SUITE = "name: t\nruns:\n  - {framework: pytorch, api: eager, synthetic: true}\n"


def quick_suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    return load_suite(path)


# -- without mmdebstrap: the local backend, or one line ------------------------------------

def test_auto_runs_on_the_local_backend_without_mmdebstrap(host, monkeypatch):
    client = fake_client()
    use_engine(monkeypatch, client)
    said: list[str] = []
    backend = backends.select_backend("auto", say=said.append)
    assert isinstance(backend, LocalBackend)
    assert said == [f"Docker cannot build images here: the base image {PINNED} cannot be pulled "
                    f"({NO_HOST}) and mmdebstrap is not installed; running on the local backend "
                    "(one virtualenv per framework)."]
    assert client.images.pulls == [PINNED]


def test_backend_docker_without_mmdebstrap_says_what_to_do_in_one_line(host, monkeypatch, tmp_path):
    use_engine(monkeypatch, fake_client())
    backend = backends.select_backend("docker")  # named outright: its preflight checks
    with pytest.raises(DlbenchError) as info:
        backend.preflight(quick_suite(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"BACKEND=docker but no image can be built here: the base image {PINNED} "
                       f"cannot be pulled ({NO_HOST}) and mmdebstrap is not installed; install "
                       "mmdebstrap (it makes a local base, remembered for later builds) or set "
                       "DLBENCH_BASE_IMAGE to a base image present in the engine, or use --backend local")


def test_no_build_needs_no_base(host, monkeypatch, tmp_path):
    """Images already here (docker load on an air-gapped host) run without any base."""
    client = fake_client()
    use_engine(monkeypatch, client)
    backend = backends.select_backend("auto", say=pytest.fail, build=False)
    assert backend.name == "docker"
    backends.use_existing_environments(backend)
    with pytest.raises(DlbenchError, match=r"^image dlbench/pytorch:2\.13\.0-cpu is not built \(and --no-build"):
        backend.preflight(quick_suite(tmp_path))
    assert client.images.pulls == []


def test_dlbench_run_backend_docker_exits_2_with_that_line(host, monkeypatch, capsys, tmp_path):
    use_engine(monkeypatch, fake_client())
    code = main(["run", str(quick_suite(tmp_path).path), "--backend", "docker",
                 "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("dlbench: error: BACKEND=docker but no image can be built here: ")
    assert err.endswith("or use --backend local")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("setup", ["mmdebstrap", "pinned present", "pullable", "override",
                                   "remembered tarball"])
def test_docker_stays_when_a_base_can_be_had(host, monkeypatch, setup):
    client = fake_client(present=[PINNED] if setup == "pinned present" else [],
                         pullable=[PINNED] if setup == "pullable" else [])
    if setup == "mmdebstrap":
        install_fake_mmdebstrap(host)
    if setup == "override":
        monkeypatch.setenv("DLBENCH_BASE_IMAGE", "local/elsewhere:1")
    if setup == "remembered tarball":  # importing a cached tarball needs no mmdebstrap
        tarball = base_module.default_base_tarball()
        tarball.parent.mkdir(parents=True)
        tarball.write_bytes(b"tar")
        base_module.remember_base(PINNED, base_module.DEFAULT_BASE_TAG, tarball)
    use_engine(monkeypatch, client)
    said: list[str] = []
    backend = backends.select_backend("auto", say=said.append)
    assert backend.name == "docker" and said == []
    assert client.images.pulls == ([PINNED] if setup == "pullable" else [])


# -- the build's base: made, remembered, reused; DLBENCH_BASE_IMAGE wins -------------------

def test_unpullable_base_is_made_with_mmdebstrap_and_remembered(host, monkeypatch):
    install_fake_mmdebstrap(host)
    made: list[str] = []
    monkeypatch.setattr(base_module, "make_base_image", fake_make_base_image(made))
    client = fake_client()
    lines: list[str] = []
    ref, image = base_module.base_for_build(client, PINNED, None, lines.append)
    assert ref == base_module.DEFAULT_BASE_TAG and image is client.images.present[ref]
    assert made == [ref] and client.images.pulls == [PINNED]
    assert [line for line in lines if "mmdebstrap" in line] == [
        f"base image {PINNED} cannot be pulled ({NO_HOST}); making a local Debian base with "
        f"mmdebstrap instead, remembered for later builds in {base_module.state_file()}"]
    state = json.loads(base_module.state_file().read_text())
    tarball = base_module.default_base_tarball()
    assert state == {"schema_version": 1, "bases": {PINNED: {
        "tag": ref, "tarball": str(tarball), "tarball_sha256": sha256_file(tarball)}}}
    assert base_module.state_file().parent == host.cache / "base"

    # a later build: no pull, no mmdebstrap, no DLBENCH_BASE_IMAGE
    (host.bin / "mmdebstrap").unlink()
    lines.clear()
    assert base_module.base_for_build(client, PINNED, None, lines.append)[0] == ref
    assert client.images.pulls == [PINNED] and made == [ref]
    assert lines == [f"base image {PINNED} cannot be pulled here: using the local base {ref} "
                     f"(remembered in {base_module.state_file()}; DLBENCH_BASE_IMAGE overrides)"]

    # the engine lost the image (docker image prune): imported again from the tarball
    del client.images.present[ref]
    assert base_module.base_for_build(client, PINNED, None)[0] == ref
    assert made == [ref, ref] and client.images.pulls == [PINNED]


def test_dlbench_base_image_wins_over_the_remembered_base(host, monkeypatch):
    tarball = base_module.default_base_tarball()
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"tar")
    base_module.remember_base(PINNED, base_module.DEFAULT_BASE_TAG, tarball)
    client = fake_client(present=["local/mine:1"])
    ref, image = base_module.base_for_build(client, PINNED, "local/mine:1")
    assert ref == "local/mine:1" and client.images.pulls == []
    with pytest.raises(DlbenchError, match=r"local/gone:1 is not available locally .*make base-image"):
        base_module.base_for_build(client, PINNED, "local/gone:1")


def test_unpullable_base_without_mmdebstrap_is_one_line(host):
    with pytest.raises(base_module.BaseUnavailable) as info:
        base_module.base_for_build(fake_client(), PINNED, None)
    assert str(info.value) == (
        f"base image {PINNED} cannot be pulled ({NO_HOST}) and mmdebstrap is not installed to make "
        "a local one; install mmdebstrap (it makes a local base, remembered for later builds) or "
        "set DLBENCH_BASE_IMAGE to a base image present in the engine")
    assert not base_module.state_file().exists()


def test_a_damaged_state_file_is_forgotten(host):
    base_module.state_file().parent.mkdir(parents=True)
    base_module.state_file().write_text("{not json")
    assert base_module.remembered_bases() == {}
    base_module.state_file().write_text(json.dumps({"bases": {PINNED: {"tag": 3}}}))
    assert base_module.remembered_bases() == {}
    assert os.environ["PATH"] == str(host.bin)
