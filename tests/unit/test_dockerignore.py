""".dockerignore at the repository root: a build from the root (the command
`dlbench images build --print` gives) sends what docker/Dockerfile copies, exactly the
files `dlbench images build` puts in its own context, and nothing else. Matched with the
docker SDK's own .dockerignore implementation (the one docker-py uses to send a context);
tests/integration/test_image_build.py checks the real docker CLI agrees."""
from __future__ import annotations

import re

import pytest
from docker.utils.build import PatternMatcher, exclude_paths

from orchestrator import images
from orchestrator.images.context import BUILD_INPUTS, context_files
from orchestrator.paths import REPO_ROOT

SPECS = images.load_images()
FLAVOURS = [(fw, fl) for fw, spec in SPECS.items() for fl in spec.flavours]


def ignore_patterns() -> list[str]:
    """The patterns as the docker SDK reads them (docker/api/build.py)."""
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def excluded(path: str) -> bool:
    return PatternMatcher(ignore_patterns()).matches(path)


def sent_files() -> set[str]:
    """Files of the repository a build from its root sends (build-inputs/ aside)."""
    paths = exclude_paths(str(REPO_ROOT), ignore_patterns())
    return {p for p in paths if (REPO_ROOT / p).is_file() and p != ".dockerignore"
            and p.split("/")[0] != BUILD_INPUTS}


def copy_sources() -> list[str]:
    """Every source of the Dockerfile's COPY lines from the context (not --from=stage),
    with ${FRAMEWORK} and ${FLAVOUR} expanded for every image in images.yaml."""
    text = images.DOCKERFILE.read_text()
    sources: set[str] = set()
    for line in re.findall(r"^COPY\s+(.+)$", text, re.MULTILINE):
        words = line.split()
        if any(w.startswith("--from") for w in words):
            continue
        for source in words[:-1]:
            for framework, flavour in FLAVOURS:
                sources.add(source.replace("${FRAMEWORK}", framework).replace("${FLAVOUR}", flavour))
    return sorted(sources)


def test_the_dockerfile_copies_what_the_test_expects():
    """Guards the parsing below: a rewritten COPY line must not make the checks vacuous."""
    sources = copy_sources()
    assert {"contract/", "workloads/", "docker/common/install-requirements.sh",
            "docker/pytorch/requirements-cpu.txt", "build-input[s]"} <= set(sources)


@pytest.mark.parametrize("source", copy_sources())
def test_nothing_the_dockerfile_copies_is_excluded(source):
    if source == "build-input[s]":      # optional: whatever a user puts there goes in
        for path in ("build-inputs/ca.crt", "build-inputs/pip.env", "build-inputs/wheelhouse/x.whl"):
            assert not excluded(path), path
        return
    path = REPO_ROOT / source
    assert path.exists(), f"the Dockerfile copies {source}, which is not in the repository"
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    wanted = {p.relative_to(REPO_ROOT).as_posix() for p in files
              if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}
    assert wanted and wanted <= sent_files(), sorted(wanted - sent_files())


def test_the_context_sent_is_what_dlbench_builds_send():
    """From the root: every image's context_files, nothing more (so a new file in docker/ or a
    new top-level directory needs a deliberate decision, here and in context.py)."""
    expected = {rel for fw, fl in FLAVOURS for rel in context_files(*images.get_spec(fw, fl))}
    sent = sent_files()
    assert sent == expected, {"sent, not needed": sorted(sent - expected),
                              "needed, not sent": sorted(expected - sent)}


@pytest.mark.parametrize("path", [
    ".venv/bin/python", "results/20260101-000000-quick/report.html", ".git/HEAD", "tests/unit/test_x.py",
    "orchestrator/cli/__init__.py", "workloads/__pycache__/harness.cpython-311.pyc", "contract/x.pyc",
    ".pytest_cache/v/cache", ".mypy_cache/3.11/x.json", ".ruff_cache/x", "dlbench.egg-info/PKG-INFO",
    "docker/images.yaml", "docker/lock.py", "docker/pytorch/requirements-cpu.in", "README.md",
])
def test_what_stays_out(path):
    assert excluded(path), path
