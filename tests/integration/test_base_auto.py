"""`make bench` on an engine with no pullable base: the real build path makes the local base
with mmdebstrap (here from the tarball CI already cached, to keep its time sane), builds on
it, and remembers it, so the next build neither asks the registry nor needs
DLBENCH_BASE_IMAGE. (The fake-engine side and the fall-back to the local backend without
mmdebstrap: tests/unit/test_base_auto.py.)"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from orchestrator import images
from orchestrator.fileio import sha256_file
from orchestrator.images import base as base_module
from orchestrator.images import build as build_module

pytestmark = pytest.mark.docker

# A registry that is never there: the pull fails at once, with or without network access.
UNPULLABLE = "localhost:1/dlbench-test-unpullable@sha256:" + "0" * 64


@pytest.fixture()
def no_pullable_base(docker_client, monkeypatch, tmp_path):
    """The pytorch/cpu image's base set to one that cannot be pulled, DLBENCH_BASE_IMAGE
    unset, and a fresh dlbench cache holding only the base tarball made earlier, if any."""
    assert shutil.which("mmdebstrap"), "mmdebstrap missing (.ci/run installs it)"
    cached = images.default_base_tarball()
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DLBENCH_BASE_IMAGE", raising=False)
    if cached.is_file():
        images.default_base_tarball().parent.mkdir(parents=True)
        images.default_base_tarball().symlink_to(cached)
    spec, flavour = images.get_spec("pytorch", "cpu")
    unpullable = dataclasses.replace(flavour, base=UNPULLABLE)
    monkeypatch.setattr(build_module, "get_spec", lambda framework, name: (spec, unpullable))


def test_make_bench_on_an_engine_with_no_pullable_base(docker_client, no_pullable_base):
    options = images.BuildOptions.from_env()
    assert options.base_image is None
    lines: list[str] = []
    info = images.ensure_image(docker_client, "pytorch", "cpu", options, progress=lines.append)
    tag = images.DEFAULT_BASE_TAG
    assert info.base_image == tag and info.labels[images.LABEL_BASE] == tag
    assert f"base image {UNPULLABLE} not found locally, pulling it" in lines
    said = [line for line in lines if line.startswith(f"base image {UNPULLABLE} cannot be pulled (")]
    assert len(said) == 1 and said[0].endswith(
        f"; making a local Debian base with mmdebstrap instead, remembered for later builds in "
        f"{base_module.state_file()}"), said

    state = json.loads(base_module.state_file().read_text())
    entry = state["bases"][UNPULLABLE]
    tarball = images.default_base_tarball()
    assert entry == {"tag": tag, "tarball": str(tarball), "tarball_sha256": sha256_file(tarball)}
    base = docker_client.images.get(tag)
    assert base.attrs["Config"]["Labels"][base_module.LABEL_TARBALL_SHA] == entry["tarball_sha256"]
    assert info.labels[images.LABEL_BASE_ID] == base.id

    # the next `make bench`: the remembered base, no pull, no mmdebstrap, the same image
    again: list[str] = []
    second = images.ensure_image(docker_client, "pytorch", "cpu", images.BuildOptions.from_env(),
                                 progress=again.append)
    assert not second.built and second.id == info.id
    assert not any("pull" in line.lower() and "cannot be pulled here" not in line for line in again), again
    assert not any("mmdebstrap" in line for line in again), again
    assert f"base image {UNPULLABLE} cannot be pulled here: using the local base {tag} (remembered " \
           f"in {base_module.state_file()}; DLBENCH_BASE_IMAGE overrides)" in again
