"""The backend registry: names, `auto`, the --backend help and errors, the capabilities a
backend declares (--no-build, rerun, enforcement) and the schemas' backend names all come
from it; a registered fake backend shows that adding one is one registry line."""
from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from orchestrator.errors import DlbenchError
from orchestrator.execution import backends
from orchestrator.execution.backends.base import ENFORCEABLE, Backend, Unavailable
from orchestrator.execution.backends.local import LocalBackend
from orchestrator.execution.rerun import rerun
from orchestrator.paths import REPO_ROOT
from orchestrator.results import bundle
from orchestrator.results.directory import schema_error
from tests.fake_backend import FakeBackend, registered, scripted

RECORD = {"schema_version": 1, "run_id": "r", "outcome": "ok", "started_at": "a", "finished_at": "b",
          "wall_s": 1.0}


def test_the_shipped_backends_in_order():
    assert backends.names() == ["docker", "local", "slurm"]
    assert backends.backend_help() == "auto (default; Docker if reachable, else local), docker, local or slurm"


@pytest.mark.parametrize("name", backends.names())
def test_every_registered_backend_implements_the_whole_interface(name):
    cls = backends.backend_class(name)
    assert issubclass(cls, Backend) and not inspect.isabstract(cls)
    assert cls.name == name and cls.summary
    assert cls.enforces <= set(ENFORCEABLE), cls.enforces - set(ENFORCEABLE)


def test_what_each_backend_enforces_is_recorded_with_the_run():
    run = SimpleNamespace(resources={"cpus": 2, "cpuset": None, "memory": "4g"})
    docker_class = backends.backend_class("docker")
    assert {"cpus", "cpuset", "memory", "network_off", "read_only_root"} <= docker_class.enforces
    assert docker_class.recorded_resources(docker_class.__new__(docker_class), run) == {"cpus": 2, "memory": "4g"}
    assert LocalBackend.enforces == {"timeout"}
    # Docker hands a container only its GPUs; the local backend only tells the workload which
    assert "gpus" in docker_class.enforces and "gpus" in ENFORCEABLE
    assert LocalBackend(venv_root=None).recorded_resources(run) == {"cpus": 2, "memory": "4g", "enforced": False}
    assert LocalBackend().recorded_resources(SimpleNamespace(resources={"cpus": None})) == {}


def test_a_registered_backend_is_a_choice_and_a_valid_name_in_the_schemas():
    for kind, document in (("run", {**RECORD, "backend": "fake"}),
                           ("plan", {"suite": "s", "backend": "fake", "runs": []})):
        assert schema_error(kind, {**document, "backend": "docker"}) is None
        assert schema_error(kind, document) == "backend: 'fake' is not one of ['docker', 'local', 'slurm']"
        with registered(FakeBackend):
            assert schema_error(kind, document) is None
            assert schema_error(kind, {**document, "backend": "nope"}) == \
                "backend: 'nope' is not one of ['docker', 'local', 'slurm', 'fake']"
            assert backends.names() == ["docker", "local", "slurm", "fake"]
            assert backends.backend_help() == \
                "auto (default; Docker if reachable, else local), docker, local, slurm or fake"
            with pytest.raises(DlbenchError) as info:
                backends.select_backend("nope")
            assert str(info.value) == "--backend/BACKEND: unknown backend 'nope' (use auto, docker, local, slurm or fake)"
            assert isinstance(backends.select_backend("fake"), FakeBackend)
        assert schema_error(kind, document) == "backend: 'fake' is not one of ['docker', 'local', 'slurm']"


def test_unknown_backend_message_as_today():
    with pytest.raises(DlbenchError) as info:
        backends.select_backend("nope")
    assert str(info.value) == "--backend/BACKEND: unknown backend 'nope' (use auto, docker, local or slurm)"


@pytest.fixture()
def no_engine(monkeypatch):
    docker_module = pytest.importorskip("orchestrator.execution.backends.docker")
    monkeypatch.setattr(docker_module, "connect", lambda: (None, "unix:///gone.sock: Connection refused"))


def test_auto_without_an_engine_falls_back_to_local_in_one_line(no_engine):
    said: list[str] = []
    with registered(FakeBackend):  # not an auto backend: never chosen by `auto`
        backend = backends.select_backend("auto", say=said.append)
    assert isinstance(backend, LocalBackend)
    assert said == ["No Docker engine reachable (unix:///gone.sock: Connection refused); running on the "
                    "local backend (one virtualenv per framework)."]
    with pytest.raises(DlbenchError) as info:
        backends.select_backend("docker")
    assert str(info.value) == ("BACKEND=docker but no Docker engine is reachable (unix:///gone.sock: "
                               "Connection refused); start dockerd or set DOCKER_HOST")


def test_auto_tries_the_auto_backends_in_registry_order(monkeypatch):
    class Away(FakeBackend):
        name, summary = "away", "somewhere else"

        @classmethod
        def open(cls):
            raise Unavailable("BACKEND=away but it is away", reason="The away backend is away")

    class Here(FakeBackend):
        name, summary = "here", "right here"

    monkeypatch.setattr(backends, "BACKENDS", {})
    backends.register("away", Away, auto="Away if there")
    backends.register("manual", FakeBackend)
    backends.register("here", Here, auto="here")
    said: list[str] = []
    assert isinstance(backends.select_backend("auto", say=said.append), Here)
    assert said == ["The away backend is away; running on the here backend (right here)."]
    assert backends.backend_help() == "auto (default; Away if there, else here), away, manual or here"
    with pytest.raises(Unavailable, match="^BACKEND=away but it is away$"):
        backends.select_backend("away")


def test_no_build_is_a_capability():
    local = LocalBackend()
    with pytest.raises(DlbenchError) as info:
        backends.use_existing_environments(local)
    assert str(info.value) == "--no-build applies to the docker or slurm backend only"
    builder = scripted(supports_no_build=True)
    with registered(builder):
        with pytest.raises(DlbenchError) as info:
            backends.use_existing_environments(local)
        assert str(info.value) == "--no-build applies to the docker, slurm or fake backend only"
        fake = builder()
        backends.use_existing_environments(fake)
        assert fake.build is False


def test_rerun_backends_come_from_the_registry():
    assert backends.rerun_backends() == ["docker"]
    with registered(scripted(reruns_recorded_images=True)):
        assert backends.rerun_backends() == ["docker", "fake"]


def test_rerun_of_a_local_bundle_is_refused_as_today(tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "bundle-small", copy)
    plan = json.loads((copy / "plan.json").read_text())
    (copy / "plan.json").write_text(json.dumps({**plan, "backend": "local"}))
    bundle.write_manifest(copy)
    with pytest.raises(DlbenchError) as info:
        rerun(copy, None, tmp_path / "again", say=lambda line: None)
    assert str(info.value) == f"{copy}: ran on the local backend; rerun needs recorded images (the docker backend)"


def test_planning_never_loads_the_docker_sdk(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nruns: [{framework: pytorch, api: eager}]\n")
    code = textwrap.dedent(f"""
        import sys
        from orchestrator.cli import main
        assert main(["plan", {str(suite)!r}]) == 0
        print(sorted(m for m in sys.modules if m == "docker" or m.startswith("docker.")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
