"""Faults on a shared GPU box, with a real Docker engine, real containers of the real
images and the real MNIST test split: whatever happens, finished results survive, each
run gets a clear outcome, and `dlbench run --resume` finishes the rest.

Runs are tiny (256 images) so that each costs a container start and a framework import.
Containers are found by the results directory they write into (a label), never by a
broad filter: other suites may share the engine.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import docker.errors
import pytest

from orchestrator.execution.backends.docker import CONTAINER_UID, NO_GPU_MESSAGE, RESULTS_LABEL, DockerBackend
from orchestrator.execution.runner import run_suite
from orchestrator.paths import REPO_ROOT
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import MIN_FREE_BYTES, ResultsDir

from .helpers import DLBENCH, dlbench, only_results_dir, runs, write_suite

pytestmark = pytest.mark.docker

TINY = "dataset: mnist, train_split: test, train_limit: 256, test_limit: 256, warmup_steps: 1"
LONG = "train_limit: 2048, epochs: 500"  # minutes of training: a fault surely lands mid-run


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, mnist_test_dir) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    shutil.copytree(mnist_test_dir, root / "mnist")
    return root


@pytest.fixture()
def env(base_image, datasets, tmp_path):
    return {"DLBENCH_BASE_IMAGE": base_image, "DLBENCH_DATA_DIR": str(datasets),
            "DLBENCH_RESULTS": str(tmp_path / "results")}


def suite_file(tmp_path: Path, *runs: str, name="faults") -> Path:
    lines = "\n".join(f"  - {{framework: pytorch, api: eager, seed: {seed}{', ' + r if r else ''}}}"
                      for seed, r in enumerate(runs))  # a seed each: identical runs are refused
    return write_suite(tmp_path, f"name: {name}\ndefaults: {{{TINY}, resources: {{cpus: 1, memory: 2g}}}}\n"
                                 f"runs:\n{lines}\n")


def start_dlbench(*args, env) -> subprocess.Popen:
    return subprocess.Popen([*DLBENCH, *map(str, args)], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env})


def ours(client, root: Path, run_id: str | None = None) -> list[dict]:
    """Containers writing under results root `root` (optionally: for one run), as one
    engine call: containers of finished runs vanish at any moment."""
    found = client.api.containers(all=True, filters={"label": RESULTS_LABEL})
    return [c for c in found if c["Labels"][RESULTS_LABEL].startswith(str(root))
            and (run_id is None or c["Labels"]["org.dlbench.run-id"] == run_id)]


def wait_running(client, root: Path, run_id: str, proc: subprocess.Popen, seconds=300) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for container in ours(client, root, run_id):
            if container["State"] == "running":
                return container["Id"]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no running container for {run_id}")


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}


@pytest.fixture()
def cleanup(docker_client, tmp_path):
    yield
    for container in ours(docker_client, tmp_path):
        try:
            docker_client.api.remove_container(container["Id"], force=True)
        except docker.errors.NotFound:
            pass


# ------------------------------------------------------------------ container faults

def test_killed_container_is_an_outcome_and_the_suite_goes_on(docker_client, env, tmp_path, cleanup):
    root = tmp_path / "results"
    proc = start_dlbench("run", suite_file(tmp_path, "", LONG, ""), "--backend", "docker", env=env)
    victim = wait_running(docker_client, root, "02-pytorch-eager", proc)
    first = snapshot(only_results_dir(root) / "runs" / "01-pytorch-eager")
    docker_client.api.kill(victim, signal="SIGKILL")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    results = only_results_dir(root)
    found = runs(results)
    assert [r["record"]["outcome"] for r in found.values()] == ["ok", "killed", "ok"], out
    killed = found["02-pytorch-eager"]["record"]
    assert killed["message"] == "the workload was killed (exit code 137)" and killed["exit_code"] == 137
    assert snapshot(results / "runs" / "01-pytorch-eager") == first  # untouched
    assert "killed" in (results / "report.html").read_text()
    assert not ours(docker_client, root)
    print("killed run:", killed["outcome"], killed["message"])


def test_out_of_memory_is_an_outcome_and_the_suite_goes_on(docker_client, env, tmp_path, cleanup):
    # all 10,000 test images in one batch: ~740 MB for the first conv layer alone
    greedy = "train_limit: null, batch_size: 10000, resources: {memory: 600m}"
    proc = dlbench("run", suite_file(tmp_path, greedy, ""), "--backend", "docker", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = runs(only_results_dir(tmp_path / "results"))
    oom, after = found["01-pytorch-eager"]["record"], found["02-pytorch-eager"]["record"]
    assert oom["outcome"] == "oom", oom
    assert oom["resources"]["memory"] == "600m"
    assert after["outcome"] == "ok"
    print("oom run:", oom["outcome"], oom["message"])


class BrokenMetricsBackend(DockerBackend):
    """The real image and the real locked-down container, whose command writes a bad
    metrics.json (or none) instead of training: what a crashing workload leaves."""

    WRITES = {
        "01-pytorch-eager": "open(OUT, 'w').write('{\"schema_version\": 1, \"status\": \"o')",
        "02-pytorch-eager": "import json; json.dump({'schema_version': 1, 'status': 'ok'}, open(OUT, 'w'))",
        "03-pytorch-eager": "pass",
    }

    def container_config(self, run, run_dir, host_data_dir, environment):
        config = super().container_config(run, run_dir, host_data_dir, environment)
        out = f"/results/{run.run_id}/metrics.json"
        config.update(entrypoint=["python", "-c"], command=[f"OUT = {out!r}\n{self.WRITES[run.run_id]}"])
        return config


def test_corrupt_invalid_or_missing_metrics_fail_the_run_and_the_report_shows_it(
        docker_client, base_image, datasets, tmp_path, monkeypatch, cleanup):
    monkeypatch.setenv("DLBENCH_BASE_IMAGE", base_image)
    monkeypatch.setenv("DLBENCH_DATA_DIR", str(datasets))
    suite = load_suite(suite_file(tmp_path, "", "", ""))
    results = run_suite(suite, BrokenMetricsBackend(docker_client), tmp_path / "results",
                        say=lambda line: None)
    records = {run_id: json.loads((results.path / "runs" / run_id / "run.json").read_text())
               for run_id in BrokenMetricsBackend.WRITES}
    assert {r["outcome"] for r in records.values()} == {"failed"}
    messages = [records[run_id]["message"] for run_id in BrokenMetricsBackend.WRITES]
    assert messages[0].startswith("metrics.json is not valid JSON (")
    assert messages[1].startswith("metrics.json does not match the schema: ")
    assert messages[2] == "the workload wrote no metrics.json (exit code 0)"
    html = (results.path / "report.html").read_text()
    assert "Runs that did not finish" in html
    for run_id in BrokenMetricsBackend.WRITES:
        assert run_id in html
    summary = json.loads((results.path / "summary.json").read_text())
    assert [r["outcome"] for r in summary["runs"]] == ["failed"] * 3
    for message in messages:
        print("bad metrics:", message)


# ------------------------------------------------------------------ orchestrator faults

def test_sigterm_stops_the_container_and_resume_finishes_the_rest(docker_client, env, tmp_path, cleanup):
    root = tmp_path / "results"
    proc = start_dlbench("run", suite_file(tmp_path, "", "", ""), "--backend", "docker", env=env)
    wait_running(docker_client, root, "02-pytorch-eager", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    results = only_results_dir(root)
    assert proc.returncode == 130, out + err
    assert f"Interrupted: finished runs are kept; resume with: dlbench run --resume {results}" in out
    assert err.strip() == "dlbench: interrupted" and "Traceback" not in out + err
    assert not ours(docker_client, root)  # the running container was stopped and removed
    found = runs(results)
    assert list(found) == ["01-pytorch-eager", "02-pytorch-eager"]
    interrupted = found["02-pytorch-eager"]["record"]
    assert (interrupted["outcome"], interrupted["message"]) == ("error", "interrupted")
    assert (results / "report.html").is_file()
    first = snapshot(results / "runs" / "01-pytorch-eager")

    proc = dlbench("run", "--resume", results, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 run(s) kept, 2 to run" in proc.stdout
    assert snapshot(results / "runs" / "01-pytorch-eager") == first
    assert [r["record"]["outcome"] for r in runs(results).values()] == ["ok"] * 3
    summary = json.loads((results / "summary.json").read_text())
    assert [r["outcome"] for r in summary["runs"]] == ["ok"] * 3
    print("interrupted run:", interrupted["outcome"], interrupted["message"])


class EngineProxy:
    """A real byte-for-byte proxy from a unix socket to the engine's own socket.
    close() cuts every connection and removes the socket, as a stopped dockerd would;
    this leaves the shared engine itself (and other people's containers) alone."""

    def __init__(self, path: Path, engine: str):
        self.path, self.engine = path, engine
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(32)
        self.server.settimeout(0.2)
        self.open, self.connections = True, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.engine)
            self.connections += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.open = False
        self.server.close()
        self.path.unlink(missing_ok=True)
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass


@contextmanager
def engine_proxy(path: Path):
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.fail(f"DOCKER_HOST={host}: this test proxies a unix socket")
    proxy = EngineProxy(path, host[len("unix://"):])
    try:
        yield proxy
    finally:
        proxy.close()


def test_engine_lost_mid_suite_then_resume_once_it_is_back(docker_client, env, tmp_path, cleanup):
    root = tmp_path / "results"
    sock_dir = Path(tempfile.mkdtemp(prefix="dlb-"))  # unix socket paths are short
    env = {**env, "DOCKER_HOST": f"unix://{sock_dir}/docker.sock"}
    try:
        with engine_proxy(sock_dir / "docker.sock") as proxy:
            proc = start_dlbench("run", suite_file(tmp_path, "", ""), "--backend", "docker", env=env)
            wait_running(docker_client, root, "02-pytorch-eager", proc)
            proxy.close()  # the engine goes away mid-run
            out, err = proc.communicate(timeout=120)
        results = only_results_dir(root)
        assert proc.returncode == 2, out + err
        lost = err.strip()
        assert "\n" not in lost and "Traceback" not in out + err
        assert lost.startswith("dlbench: error: Docker engine stopped answering during run "
                               "02-pytorch-eager (")
        assert lost.endswith(f"finished runs are kept, resume with: dlbench run --resume {results}")
        record = runs(results)["02-pytorch-eager"]["record"]
        assert record["outcome"] == "error" and "stopped answering" in record["message"]
        assert runs(results)["01-pytorch-eager"]["record"]["outcome"] == "ok"

        down = dlbench("run", "--resume", results, env=env)  # still unreachable: one line
        assert down.returncode == 2 and down.stderr.count("\n") == 1, down.stderr
        assert "no Docker engine is reachable" in down.stderr

        with engine_proxy(sock_dir / "docker.sock"):  # the engine is back
            again = dlbench("run", "--resume", results, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "removed container" in again.stdout  # the orphan of the lost attempt
        assert [r["record"]["outcome"] for r in runs(results).values()] == ["ok", "ok"]
        print("engine lost:", lost)
        print("engine still down:", down.stderr.strip())
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


# ------------------------------------------------------------------ the results filesystem

@contextmanager
def tmpfs(path: Path, size: str):
    """A real, tiny filesystem of our own: real ENOSPC, nobody else's disk filled."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mounting a tmpfs needs root (CI runs as root)")
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 2**20)
                fh.flush()
        except OSError:
            pass
    return filler


def test_full_results_filesystem_is_refused_before_any_run(env, tmp_path):
    with tmpfs(tmp_path / "small", "1m") as small:
        proc = dlbench("run", suite_file(tmp_path, ""), "--backend", "docker",
                       env={**env, "DLBENCH_RESULTS": str(small / "results")})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip() == (
            f"dlbench: error: {small}/results: only 1.0 MiB free for results (at least "
            f"{MIN_FREE_BYTES // 2**20} MiB needed); free some space or set DLBENCH_RESULTS / "
            "--results to another filesystem")
        assert not any(small.iterdir())
    print("full disk:", proc.stderr.strip())


def test_disk_full_mid_suite_leaves_no_partial_file_and_resume_finishes(docker_client, env, tmp_path,
                                                                        cleanup):
    with tmpfs(tmp_path / "disk", f"{MIN_FREE_BYTES // 2**20 + 16}m") as disk:
        root = disk / "results"
        env = {**env, "DLBENCH_RESULTS": str(root)}
        proc = start_dlbench("run", suite_file(tmp_path, "", ""), "--backend", "docker", env=env)
        wait_running(docker_client, root, "02-pytorch-eager", proc)
        filler = fill(disk)  # full while run 02 trains: its metrics.json cannot be written
        out, err = proc.communicate(timeout=300)
        results = only_results_dir(root)
        assert proc.returncode == 2, out + err
        assert err.strip() == (f"dlbench: error: {results}: cannot write results (No space left on "
                               f"device); finished runs are kept, free space and resume with: "
                               f"dlbench run --resume {results}")
        leftovers = [p for p in results.rglob("*") if ".tmp" in p.name]
        assert not leftovers, leftovers
        for document in results.rglob("*.json"):
            json.loads(document.read_text())  # every JSON file there is whole
        assert not (results / "runs" / "02-pytorch-eager" / "metrics.json").exists()
        first = snapshot(results / "runs" / "01-pytorch-eager")
        assert json.loads(first["run.json"][0])["outcome"] == "ok"

        filler.unlink()
        again = dlbench("run", "--resume", results, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert snapshot(results / "runs" / "01-pytorch-eager") == first
        assert runs(results)["02-pytorch-eager"]["record"]["outcome"] == "ok"
    print("disk full mid-suite:", err.strip())


def test_atomic_write_on_a_full_filesystem_keeps_the_previous_file(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        results = ResultsDir(disk)
        results.write_json("summary.json", {"runs": ["before"]})
        fill(disk)
        with pytest.raises(OSError) as info:
            results.write_json("summary.json", {"runs": ["after" * 10_000]})
        assert info.value.strerror == "No space left on device"
        assert json.loads((disk / "summary.json").read_text()) == {"runs": ["before"]}
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "summary.json"]


# ------------------------------------------------------------------ bad input needing the engine

def test_no_build_with_a_missing_image_is_one_line_before_anything_runs(docker_client, env, tmp_path):
    tag = "dlbench/pytorch:2.13.0-cuda"
    if any(tag in image.tags for image in docker_client.images.list("dlbench/pytorch")):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{tag} is built on CI's engine: no missing image to show")
        pytest.skip(f"{tag} is built on this engine: no missing image to show")
    suite = write_suite(tmp_path, f"name: gpu\ndefaults: {{{TINY}, device: gpu}}\n"
                                  "runs: [{framework: pytorch, api: eager}]\n")
    proc = dlbench("run", suite, "--backend", "docker", "--no-build", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (f"dlbench: error: image {tag} is not built (and --no-build was "
                                   "given); build it with `dlbench images build pytorch --flavour cuda`")
    assert not (tmp_path / "results").exists()
    assert NO_GPU_MESSAGE not in proc.stderr  # the image is checked first, whatever the GPU


# ------------------------------------------------------------------ containers, from inside

PROBE = """
import json, os
def writable(path):
    try:
        with open(path, "w") as fh:
            fh.write("x")
        return True
    except OSError:
        return False
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
print(json.dumps({
    "uid": os.getuid(), "root_fs": writable("/probe"), "data": writable(DATA + "/probe"),
    "results": writable(RESULTS + "/probe"), "tmp": writable("/tmp/probe"),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "docker_socket": os.path.exists("/var/run/docker.sock"),
    "capabilities": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
}))
"""


def test_container_is_locked_down_seen_from_inside(docker_client, base_image, datasets, tmp_path,
                                                   monkeypatch):
    monkeypatch.setenv("DLBENCH_BASE_IMAGE", base_image)
    run = load_suite(suite_file(tmp_path, "")).runs[0]
    backend = DockerBackend(docker_client)
    environment = backend.prepare("pytorch", "cpu", progress=lambda line: None)
    run_dir = ResultsDir.create(tmp_path / "results", "lock").run_dir(run.run_id)
    if os.geteuid() == 0:  # as DockerBackend.execute does: the image's user writes here
        os.chown(run_dir.path, CONTAINER_UID, CONTAINER_UID)
    config = backend.container_config(run, run_dir, str(datasets / "mnist"), environment)
    script = f"DATA = '/data/mnist'\nRESULTS = '/results/{run.run_id}'\n{PROBE}"
    container = docker_client.containers.create(**{**config, "entrypoint": ["python", "-c"],
                                                   "command": [script]})
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs()
        seen = json.loads(container.logs(stdout=True, stderr=False).decode().strip().splitlines()[-1])
    finally:
        container.remove(force=True)
    print("inside the container:", seen)
    assert seen["uid"] != 0
    assert seen["root_fs"] is False and seen["data"] is False
    assert seen["results"] is True and seen["tmp"] is True
    assert seen["interfaces"] == ["lo"]
    assert seen["docker_socket"] is False
    assert seen["capabilities"] == "0000000000000000" and seen["no_new_privs"] == "1"
    assert (run_dir.path / "probe").read_text() == "x"
    assert not (datasets / "mnist" / "probe").exists()
