"""`dlbench rerun BUNDLE [--run ID]`: the recorded runs again, on the very images recorded.

The plan and specs come from the bundle (never from a suite file that may have
changed); each run uses the image whose ID the bundle recorded, never whatever
its tag points at today. A missing image is one sentence, before anything runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from orchestrator.results import bundle
from orchestrator.execution.backends.docker import DockerBackend, connect
from orchestrator.errors import DlbenchError
from orchestrator.fileio import read_json_or_none
from orchestrator.images import ImageInfo
from orchestrator.execution.resume import load_plan
from orchestrator.results.directory import ResultsDir
from orchestrator.execution.runner import run_suite


class RecordedImageBackend(DockerBackend):
    """The docker backend, with each framework/flavour pinned to a recorded image ID."""

    def __init__(self, client, image_ids: dict[str, str], tags: dict[str, str]):
        super().__init__(client, build=False)
        self.image_ids, self.tags = image_ids, tags

    def prepare(self, framework, flavour, progress):
        key = f"{framework}/{flavour}"
        image = self.client.images.get(self.image_ids[key])
        progress(f"{self.image_ids[key]} (recorded as {self.tags.get(key) or 'untagged'})")
        return {"kind": "image", **ImageInfo.from_image(image, self.tags.get(key) or "").to_dict()}


def recorded_image_ids(source: Path, runs) -> tuple[dict[str, str], dict[str, str]]:
    """framework/flavour -> image ID (and tag) as the bundle recorded them."""
    images = read_json_or_none(source / "images.json") or {}
    ids, tags = {}, {}
    for run in runs:
        key = f"{run.framework}/{run.flavour}"
        env = (read_json_or_none(source / "runs" / run.run_id / "run.json") or {}).get("environment") or {}
        image_id = env.get("id") or (images.get(key) or {}).get("id")
        if not image_id:
            raise DlbenchError(f"{source.name}: run {run.run_id} recorded no image ID "
                               "(it did not run on the docker backend); it cannot be rerun exactly")
        ids.setdefault(key, image_id)
        tags.setdefault(key, env.get("tag") or (images.get(key) or {}).get("tag"))
    return ids, tags


def rerun(bundle_path: Path, run_id: str | None, results_root: Path,
          say: Callable[[str], None] = print) -> ResultsDir:
    with bundle.opened(bundle_path) as source:
        problems = bundle.verify(source)
        if problems:
            raise DlbenchError(f"{bundle_path}: the bundle does not verify ({problems[0]}); "
                               "rerun only what `dlbench verify` accepts")
        suite, backend_name = load_plan(source)
        if backend_name != "docker":
            raise DlbenchError(f"{bundle_path}: ran on the {backend_name} backend; rerun needs "
                               "recorded images (the docker backend)")
        if run_id is not None:
            known = [run.run_id for run in suite.runs]
            if run_id not in known:
                raise DlbenchError(f"--run {run_id}: no such run in {bundle_path} "
                                   f"(runs: {', '.join(known)})")
            suite.runs = [run for run in suite.runs if run.run_id == run_id]
        for run in suite.runs:  # the spec the run was given, dataset path as planned
            spec = read_json_or_none(source / "runs" / run.run_id / "spec.json")
            if spec:
                spec["dataset"]["path"] = None
                run.spec = spec
        ids, tags = recorded_image_ids(source, suite.runs)
        client, problem = connect()
        if client is None:
            raise DlbenchError(f"rerun needs a Docker engine ({problem})")
        _require_images(client, ids, tags)
        say(f"Rerunning {len(suite.runs)} run(s) of {bundle.bundle_name(Path(bundle_path))} "
            "on the recorded images")
        return run_suite(suite, RecordedImageBackend(client, ids, tags), results_root, say=say)


def _require_images(client, ids: dict[str, str], tags: dict[str, str]) -> None:
    import docker.errors

    for key, image_id in ids.items():
        try:
            client.images.get(image_id)
        except docker.errors.ImageNotFound:
            raise DlbenchError(
                f"image {image_id} ({tags.get(key) or key}) recorded by the bundle is not present "
                "locally; load that exact image (docker load) to rerun: a rebuilt image has "
                "another ID") from None


