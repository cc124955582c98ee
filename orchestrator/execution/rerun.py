"""`dlbench rerun BUNDLE [--run ID]`: the recorded runs again, on the very images recorded.

The plan and specs come from the bundle (never from a suite file that may have
changed); each run uses the image whose ID the bundle recorded, never whatever
its tag points at today. A missing image is one sentence, before anything runs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.execution import backends
from orchestrator.execution.resume import load_plan
from orchestrator.execution.runner import run_suite
from orchestrator.fileio import read_json_or_none
from orchestrator.results import bundle
from orchestrator.results.directory import ResultsDir


def recorded_image_ids(source: Path, runs, able: str = "docker") -> tuple[dict[str, str], dict[str, str | None]]:
    """framework/flavour -> image ID (and tag) as the bundle recorded them. able: the
    backends that record image IDs, in words (for the error)."""
    images = read_json_or_none(source / "images.json") or {}
    ids: dict[str, str] = {}
    tags: dict[str, str | None] = {}
    for run in runs:
        key = f"{run.framework}/{run.flavour}"
        env = (read_json_or_none(source / "runs" / run.run_id / "run.json") or {}).get("environment") or {}
        image_id = env.get("id") or (images.get(key) or {}).get("id")
        if not image_id:
            raise DlbenchError(f"{source.name}: run {run.run_id} recorded no image ID "
                               f"(it did not run on the {able} backend); it cannot be rerun exactly")
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
        able = backends.rerun_backends()
        if backend_name not in able:
            raise DlbenchError(f"{bundle_path}: ran on the {backend_name} backend; rerun needs "
                               f"recorded images (the {backends.one_of(able)} backend)")
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
        ids, tags = recorded_image_ids(source, suite.runs, backends.one_of(able))
        backend = backends.backend_class(backend_name).for_recorded_images(ids, tags)
        say(f"Rerunning {len(suite.runs)} run(s) of {bundle.bundle_name(Path(bundle_path))} "
            "on the recorded images")
        return run_suite(suite, backend, results_root, say=say)
