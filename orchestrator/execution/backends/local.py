"""Local backend: the same workload command in one virtualenv per framework/flavour,
created with uv from the very lock files the images install.

Used when no Docker engine is reachable (and on GPU machines without Docker).
Resource limits (cpus/memory) cannot be enforced here; they are recorded as such
(Backend.enforces: only the timeout). The host's variables that change GPU behaviour are
kept from the workload (scrubbed, and recorded); dlbench sets its own. Registered as
`local` in orchestrator/execution/backends/__init__.py.
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
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from orchestrator import images
from orchestrator.errors import DlbenchError
from orchestrator.execution.backends.base import (
    CUDA_CACHE_MAXSIZE,
    DirectBackend,
    Execution,
    OutputSink,
    cuda_cache_dir,
    cuda_cache_record,
    observed,
    tree_bytes,
)
from orchestrator.execution.monitor import ProcessTreeSampler
from orchestrator.paths import REPO_ROOT, cache_dir
from orchestrator.plan.suite import PlannedRun, Suite

READY_MARKER = ".dlbench-ready"
# What the host's environment must not hand the workload: each changes which GPUs it sees,
# which libraries it loads, or how it computes (TF32, XLA, allocators, cuBLAS).
SCRUBBED_NAMES = frozenset({"LD_LIBRARY_PATH", "XLA_FLAGS", "NVIDIA_TF32_OVERRIDE", "CUDA_VISIBLE_DEVICES",
                            "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF", "CUBLAS_WORKSPACE_CONFIG"})
SCRUBBED_PREFIXES = ("TF_", "XLA_PYTHON_CLIENT_")


def scrub(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(what the workload may inherit, what was taken out, by name and value)."""
    def scrubbed(name: str) -> bool:
        return name in SCRUBBED_NAMES or name.startswith(SCRUBBED_PREFIXES)
    return ({k: v for k, v in environ.items() if not scrubbed(k)},
            {k: v for k, v in sorted(environ.items()) if scrubbed(k)})


def workload_environment(run: PlannedRun, environ: Mapping[str, str] | None = None,
                         cuda_cache: Path | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(the workload process's environment, what was scrubbed from `environ`, this
    process's own by default): the host's minus SCRUBBED, plus dlbench's own."""
    env, scrubbed = scrub(os.environ if environ is None else environ)
    env.update({"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1",
                "DLBENCH_FRAMEWORK": run.framework, "DLBENCH_API": run.api})
    if run.spec["device"] == "gpu":
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA then numbers GPUs as NVML and nvidia-smi do
        if run.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in run.gpus)
        if cuda_cache is not None:
            env.update(CUDA_CACHE_PATH=str(cuda_cache), CUDA_CACHE_MAXSIZE=str(CUDA_CACHE_MAXSIZE))
    return env, scrubbed


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


class LocalBackend(DirectBackend):
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
            check_gpu(self.nvml)
            self.check_gpus(suite)

    def prepare(self, framework, flavour, progress):
        spec, fl = images.get_spec(framework, flavour)
        lock, python = fl.lock, spec.python
        lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
        venv = self.venv_root / f"{framework}-{flavour}-py{python}-{lock_sha[:12]}"
        if not (venv / READY_MARKER).exists():
            self._create_venv(venv, python, lock, progress, spec.source_builds)
        scrubbed = scrub(os.environ)[1]
        if scrubbed:
            progress(f"kept from the workload's environment (they change GPU behaviour; recorded in "
                     f"run.json as environment_scrubbed): {', '.join(scrubbed)}")
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
        cmd = self.command(run, run_dir, Path(environment["path"]) / "bin" / "python")
        gpu_run = run.spec["device"] == "gpu"
        cuda_cache = cuda_cache_dir(f"{run.framework}-{run.flavour}-{environment['lock_sha256'][:16]}") \
            if gpu_run else None
        if cuda_cache is not None:
            cuda_cache.mkdir(parents=True, exist_ok=True)
        cuda_before = tree_bytes(cuda_cache) if cuda_cache is not None else 0
        env, scrubbed = workload_environment(run, cuda_cache=cuda_cache)
        env.update(self.extra_environment(run))
        recorded: dict = {"environment_scrubbed": scrubbed}
        cache = images.compile_cache_dir(run.framework, run.flavour, environment["lock_sha256"])
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            env["DLBENCH_COMPILE_CACHE"] = str(cache)
        resources = self.recorded_resources(run)
        # Own process group, so a timeout or Ctrl-C stops the workload and its children.
        self._process = proc = subprocess.Popen(cmd, env=env, cwd=run_dir.path,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        monitor = self.monitor_run(run, run_dir, proc.pid).start()  # before the output: it marks
        if gpu_run:                                                  # the timed epochs
            recorded["gpus"] = self.recorded_gpus(run, monitor)
        sink = OutputSink(run_dir.file("output.log"), observed(on_event, monitor))
        reader = threading.Thread(target=_pump, args=(proc, sink), daemon=True)
        reader.start()
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
        if cuda_cache is not None:
            recorded["cuda_cache"] = cuda_cache_record(cuda_cache, cuda_before)
        return Execution(proc.returncode, timed_out=timed_out, resources=resources, recorded=recorded)

    def command(self, run: PlannedRun, run_dir, python: Path) -> list[str]:
        """The workload's command line (a parallel run's launches its workers itself)."""
        return [str(python), "-m", "workloads", "run", "--spec", str(run_dir.file("spec.json"))]

    def extra_environment(self, run: PlannedRun) -> dict[str, str]:
        return {}

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


def check_gpu(nvml=None) -> None:
    """Without Docker, a GPU run needs the NVIDIA driver on this host (NVML answers)."""
    import pynvml

    nvml = nvml or pynvml
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
        nvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        raise DlbenchError(f"GPU requested but no NVIDIA driver answers on this host (NVML: {exc}); "
                           "run the CPU suite (make bench) or use a GPU machine") from None
    if count == 0:
        raise DlbenchError("GPU requested but NVML reports no GPU on this host; "
                           "run the CPU suite (make bench)")
