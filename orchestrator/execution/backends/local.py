"""Local backend: the same workload command in one virtualenv per framework/flavour,
created with uv from the very lock files the images install.

Used when no Docker engine is reachable (and on GPU machines without Docker).
Resource limits (cpus/memory) cannot be enforced here; they are recorded as such
(Backend.enforces: only the timeout). Registered as `local` in
orchestrator/execution/backends/__init__.py.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import cast

from orchestrator import images
from orchestrator.errors import DlbenchError
from orchestrator.execution.backends.base import Backend, Execution, OutputSink
from orchestrator.execution.monitor import ProcessTreeSampler
from orchestrator.paths import REPO_ROOT, cache_dir
from orchestrator.plan.suite import PlannedRun, Suite

READY_MARKER = ".dlbench-ready"


def uv_binary() -> str:
    """uv is a dependency of dlbench, so it sits next to the running interpreter."""
    candidate = Path(sys.executable).parent / "uv"
    found = str(candidate) if candidate.exists() else shutil.which("uv")
    if not found:
        raise DlbenchError("uv not found: install dlbench with 'make setup' (uv is a dependency)")
    return found


def _uv_settings() -> tuple[dict, list[str]]:
    """uv ignores pip's configuration: hand it the same wheelhouse and CA the image
    builds use (DLBENCH_WHEELHOUSE / DLBENCH_EXTRA_CA, else the host pip's own)."""
    options = images.BuildOptions.from_env()
    env = dict(os.environ)
    if options.extra_ca and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = str(options.extra_ca)
    links = ["--find-links", str(options.wheelhouse)] if options.wheelhouse else []
    return env, links


class LocalBackend(Backend):
    name = "local"
    summary = "one virtualenv per framework"
    enforces = frozenset({"timeout"})

    def __init__(self, venv_root: Path | None = None):
        self.venv_root = venv_root or cache_dir() / "venvs"
        self._process: subprocess.Popen | None = None

    @classmethod
    def open(cls) -> LocalBackend:
        return cls()

    def preflight(self, suite: Suite) -> None:
        if "gpu" in suite.devices:
            check_gpu()

    def prepare(self, framework, flavour, progress):
        spec, fl = images.get_spec(framework, flavour)
        lock, python = fl.lock, spec.python
        lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
        venv = self.venv_root / f"{framework}-{flavour}-py{python}-{lock_sha[:12]}"
        if not (venv / READY_MARKER).exists():
            self._create_venv(venv, python, lock, progress, spec.source_builds)
        return {"kind": "venv", "path": str(venv), "lock_sha256": lock_sha,
                "framework": framework, "flavour": flavour, "python": python,
                "framework_version": spec.framework_version}

    def _create_venv(self, venv: Path, python: str, lock: Path, progress,
                     source_builds: tuple[str, ...] = ()) -> None:
        progress(f"creating virtualenv {venv.name} from {lock.relative_to(REPO_ROOT)} (uv)")
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted run
        uv, (env, find_links) = uv_binary(), _uv_settings()
        install = [uv, "pip", "install", "--quiet", "--require-hashes", "--no-deps",
                   "--python", str(venv / "bin" / "python"), *find_links]
        steps = [[uv, "venv", "--quiet", "--python", python, str(venv)]]
        if source_builds:  # as in the image: sdists build against the lock's own setuptools
            tools = venv.parent / f"{venv.name}.build-tools.txt"
            venv.parent.mkdir(parents=True, exist_ok=True)
            tools.write_text(images.build_tools_requirements(lock), encoding="utf-8")
            steps += [install + ["-r", str(tools)],
                      install + ["--no-build-isolation", "--no-binary", ",".join(source_builds),
                                 "-r", str(lock)]]
        else:
            steps.append(install + ["-r", str(lock)])
        for cmd in steps:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise DlbenchError(f"{lock}: creating the local environment failed: {last}")
        (venv / READY_MARKER).write_text(lock.read_text(encoding="utf-8"))

    def dataset_path(self, run: PlannedRun, host_dir: str) -> str:
        return str(host_dir)

    def execute(self, run, run_dir, host_data_dir, environment, on_event) -> Execution:
        python = Path(environment["path"]) / "bin" / "python"
        cmd = [str(python), "-m", "workloads", "run", "--spec", str(run_dir.file("spec.json"))]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
               "DLBENCH_FRAMEWORK": run.framework, "DLBENCH_API": run.api}
        cache = images.compile_cache_dir(run.framework, run.flavour, environment["lock_sha256"])
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            env["DLBENCH_COMPILE_CACHE"] = str(cache)
        resources = self.recorded_resources(run)
        sink = OutputSink(run_dir.file("output.log"), on_event)
        # Own process group, so a timeout or Ctrl-C stops the workload and its children.
        self._process = proc = subprocess.Popen(cmd, env=env, cwd=run_dir.path,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        reader = threading.Thread(target=_pump, args=(proc, sink), daemon=True)
        reader.start()
        monitor = self.monitor_run(run, run_dir, proc.pid).start()
        timed_out = False
        try:
            proc.wait(timeout=run.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        monitor.stop()
        reader.join(timeout=30)
        sink.close()
        self._process = None
        return Execution(proc.returncode, timed_out=timed_out, resources=resources)

    def interrupt(self) -> None:
        if self._process is not None:
            _kill_group(self._process)

    def host_sampler(self, started) -> ProcessTreeSampler:
        return ProcessTreeSampler(started)


def _pump(proc: subprocess.Popen, sink: OutputSink) -> None:
    """The workload's output (stdout and stderr, merged) into the sink, until it closes."""
    stdout = cast(io.BufferedReader, proc.stdout)  # a pipe: read1 returns what is there
    for chunk in iter(lambda: stdout.read1(65536), b""):
        sink.feed(chunk)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def check_gpu() -> None:
    """Without Docker, a GPU run needs the NVIDIA driver on this host (NVML answers)."""
    import pynvml

    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        raise DlbenchError(f"GPU requested but no NVIDIA driver answers on this host (NVML: {exc}); "
                           "run the CPU suite (make bench) or use a GPU machine") from None
    if count == 0:
        raise DlbenchError("GPU requested but NVML reports no GPU on this host; "
                           "run the CPU suite (make bench)")
