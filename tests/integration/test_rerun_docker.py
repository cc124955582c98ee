"""`dlbench rerun` with real containers: a bundle's run again, on the image recorded by ID."""
from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.results import bundle

from .helpers import dlbench, only_results_dir, runs, write_suite

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def tiny_bundle(base_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("first")
    suite = write_suite(root, """
        name: tiny
        defaults: {train_limit: 512, test_limit: 256, resources: {cpus: 2, memory: 3g}}
        runs: [{framework: pytorch, api: eager}]
    """)
    proc = dlbench("run", suite, "--backend", "docker",
                   env={"DLBENCH_BASE_IMAGE": base_image, "DLBENCH_RESULTS": str(root / "results")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = only_results_dir(root / "results")
    assert proc.stdout.strip().splitlines()[-1] == f"Bundle verified: {path}"
    return path


def test_rerun_uses_the_recorded_image_id(docker_client, tiny_bundle, tmp_path):
    archive = bundle.pack(tiny_bundle, tmp_path / "tiny.tar.gz")
    proc = dlbench("rerun", archive, "--run", "01-pytorch-eager", "--results", tmp_path / "again")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = only_results_dir(tmp_path / "again")
    assert proc.stdout.strip().splitlines()[-1] == f"Bundle verified: {again}"
    before, after = runs(tiny_bundle)["01-pytorch-eager"], runs(again)["01-pytorch-eager"]
    assert after["record"]["outcome"] == "ok"
    assert after["record"]["environment"]["id"] == before["record"]["environment"]["id"]
    spec = json.loads((again / "runs" / "01-pytorch-eager" / "spec.json").read_text())
    assert spec == json.loads((tiny_bundle / "runs" / "01-pytorch-eager" / "spec.json").read_text())


def test_rerun_without_the_recorded_image_says_so_in_one_line(docker_client, tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / tiny_bundle.name)
    missing = "sha256:" + "0" * 64  # an image ID no engine has
    for rel, path in (("images.json", ("pytorch/cpu", "id")),
                      ("runs/01-pytorch-eager/run.json", ("environment", "id"))):
        doc = json.loads((copy / rel).read_text())
        doc[path[0]][path[1]] = missing
        (copy / rel).write_text(json.dumps(doc))
    bundle.write_manifest(copy)
    proc = dlbench("rerun", copy, "--results", tmp_path / "again")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dlbench: error: image {missing} ")
    assert "not present locally" in lines[0]
    assert not (tmp_path / "again").exists()
