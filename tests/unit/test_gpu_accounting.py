"""Each run's own GPUs, and only those, accounted: the GPUs a run asks for reach Docker and
the local backend, the monitor samples only them and takes energy over the timed epochs,
the local backend keeps the host's GPU variables from the workload, the CUDA compute cache
outlives a run, and system.json describes each GPU. No NVIDIA GPU here: NVML is faked
(FakeNvml, tests named *_fake_nvml); everything else is the real code."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from orchestrator.errors import DlbenchError
from orchestrator.execution import monitor, monitor_summary, sysinfo
from orchestrator.execution.backends.base import CUDA_CACHE_MAXSIZE
from orchestrator.execution.backends.local import LocalBackend, scrub, workload_environment
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import RunDir, schema_error

UUIDS = ["GPU-00000000-0000-4000-8000-000000000000", "GPU-11111111-1111-4111-8111-111111111111"]
RECORD = {"schema_version": 1, "run_id": "r", "outcome": "ok", "backend": "local", "started_at": "a",
          "finished_at": "b", "wall_s": 1.0}
MB = 2**20


class NotSupported(Exception):
    """What NVML raises for a property a board does not have."""


class FakeNvml:
    """Stands in for pynvml where no NVIDIA GPU exists: two GPUs drawing 300 W, with
    UUIDs; the total-energy counter on the GPUs in `counters` (mJ, from the clock, as
    300 W would add); every process of this machine listed on each GPU with 256 MB, so
    only the run's own are counted when the monitor filters by process."""

    def __init__(self, counters=(0, 1)):
        self.counters = set(counters)
        self.initialised = 0

    def nvmlInit(self):
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        if index not in (0, 1):
            raise NotSupported("NVML_ERROR_INVALID_ARGUMENT")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in UUIDS:
            raise NotSupported("NVML_ERROR_NOT_FOUND")
        return UUIDS.index(uuid)

    def nvmlDeviceGetIndex(self, handle):
        return handle

    def nvmlDeviceGetUUID(self, handle):
        return UUIDS[handle]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=50)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=1024 * MB, total=80 * 1024 * MB)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle not in self.counters:
            raise NotSupported("NVML_ERROR_NOT_SUPPORTED")
        return int(time.monotonic() * 300_000)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=256 * MB) for pid in psutil.pids()]


def gpu_suite(tmp_path, gpus: str):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: g\nruns: [{{framework: pytorch, api: eager, device: gpu, synthetic: true, "
                    f"gpus: {gpus}}}]\n")
    return load_suite(path)


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# -- Docker: the run's GPUs only, and a CUDA compute cache per image ------------------

def docker_config(tmp_path, monkeypatch, gpus: str):
    docker_module = pytest.importorskip("orchestrator.execution.backends.docker")
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    run = gpu_suite(tmp_path, gpus).runs[0]
    backend = docker_module.DockerBackend(client=None)
    run_dir = RunDir(tmp_path / "results" / "x" / "runs" / run.run_id)
    run_dir.path.mkdir(parents=True)
    environment = {"id": "sha256:0123456789abcdef0123", "tag": "dlbench/pytorch:2.13.0-cuda"}
    return docker_module, backend.container_config(run, run_dir, None, environment)


def test_docker_asks_the_engine_for_the_runs_gpus_only(tmp_path, monkeypatch):
    _, config = docker_config(tmp_path, monkeypatch, f"[1, {UUIDS[0]}]")
    (request,) = config["device_requests"]
    assert request["DeviceIDs"] == ["1", UUIDS[0]] and request["Capabilities"] == [["gpu"]]
    assert request["Count"] in (None, 0)


def test_docker_without_gpus_asks_for_every_gpu_as_before(tmp_path, monkeypatch):
    _, config = docker_config(tmp_path, monkeypatch, "null")
    (request,) = config["device_requests"]
    assert request["Count"] == -1 and not request.get("DeviceIDs")


def test_docker_mounts_a_cuda_compute_cache_per_image(tmp_path, monkeypatch):
    docker_module, config = docker_config(tmp_path, monkeypatch, "[0]")
    cache = tmp_path / "cache" / "cuda" / "pytorch-cuda-0123456789abcdef"
    assert cache.is_dir()
    assert config["volumes"][str(cache)] == {"bind": docker_module.CONTAINER_CUDA_CACHE, "mode": "rw"}
    assert config["environment"]["CUDA_CACHE_PATH"] == docker_module.CONTAINER_CUDA_CACHE
    assert config["environment"]["CUDA_CACHE_MAXSIZE"] == str(CUDA_CACHE_MAXSIZE) == "4294967296"


def test_docker_finds_the_containers_processes_by_host_pid():
    docker_module = pytest.importorskip("orchestrator.execution.backends.docker")

    class Container:
        tops = 0

        def stats(self, stream, decode):
            return iter(())

        def top(self):
            Container.tops += 1
            return {"Titles": ["UID", "PID", "PPID", "CMD"],
                    "Processes": [["10001", "4242", "4200", "python"], ["10001", "4243", "4242", "sh"]]}

    sampler = docker_module.DockerStatsSampler(Container())
    assert sampler.pids() == {4242, 4243}
    assert sampler.pids() == {4242, 4243} and Container.tops == 1  # `docker top` at most every few s
    sampler.close()


# -- local: the host's GPU variables kept from the workload; dlbench's own set ---------

HOST_ENV = {"HOME": "/home/me", "PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/cuda-11/lib64",
            "XLA_FLAGS": "--xla_gpu_autotune_level=0", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "TF_ENABLE_ONEDNN_OPTS": "0", "NVIDIA_TF32_OVERRIDE": "0", "CUDA_VISIBLE_DEVICES": "3",
            "CUDA_DEVICE_ORDER": "FASTEST_FIRST", "XLA_PYTHON_CLIENT_MEM_FRACTION": ".9",
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
            "TFX": "kept: not TF_", "MY_TF_VAR": "kept"}
GPU_VARIABLES = {k: v for k, v in HOST_ENV.items() if k not in ("HOME", "PATH", "TFX", "MY_TF_VAR")}


def test_local_environment_scrubs_what_changes_gpu_behaviour(tmp_path):
    kept, scrubbed = scrub(HOST_ENV)
    assert scrubbed == GPU_VARIABLES and list(scrubbed) == sorted(scrubbed)
    assert kept == {"HOME": "/home/me", "PATH": "/usr/bin", "TFX": "kept: not TF_", "MY_TF_VAR": "kept"}
    run = gpu_suite(tmp_path, f"[{UUIDS[1]}, 0]").runs[0]
    env, scrubbed = workload_environment(run, HOST_ENV, cuda_cache=tmp_path / "cuda")
    assert scrubbed == GPU_VARIABLES
    assert env["CUDA_VISIBLE_DEVICES"] == f"{UUIDS[1]},0" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["CUDA_CACHE_PATH"] == str(tmp_path / "cuda")
    assert not {"LD_LIBRARY_PATH", "XLA_FLAGS", "TF_FORCE_GPU_ALLOW_GROWTH", "NVIDIA_TF32_OVERRIDE"} & set(env)
    cpu_run = SimpleNamespace(framework="pytorch", api="eager", spec={"device": "cpu"}, gpus=None)
    env, _ = workload_environment(cpu_run, HOST_ENV)
    assert "CUDA_VISIBLE_DEVICES" not in env and "CUDA_CACHE_PATH" not in env


FAKE_WORKLOAD = """\
#!{python}
# Stands in for `python -m workloads run`: what the harness prints and leaves, no framework.
import json, os, time
with open(os.path.join(os.environ["CUDA_CACHE_PATH"], "sm_90.bin"), "wb") as fh:
    fh.write(b"k" * 4096)   # what the driver leaves when it JIT-compiles PTX
json.dump(dict(os.environ), open("env.json", "w"))
for epoch in (1, 2):
    print("@dlbench " + json.dumps({{"event": "timed", "phase": "begin", "epoch": epoch}}), flush=True)
    time.sleep(0.5)
    print("@dlbench " + json.dumps({{"event": "timed", "phase": "end", "epoch": epoch, "images": 1000}}),
          flush=True)
json.dump({{"status": "ok"}}, open("metrics.json", "w"))
"""


@pytest.fixture()
def clean_environ(monkeypatch):
    """This process's environment without what the local backend scrubs (a host may have
    some, e.g. TF_CLI_CONFIG_FILE), so each test sets exactly the ones it shows."""
    for name in scrub(os.environ)[1]:
        monkeypatch.delenv(name)


@pytest.fixture()
def fake_venv(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_WORKLOAD.format(python=sys.executable))
    python.chmod(0o755)
    return {"kind": "venv", "path": str(venv), "lock_sha256": "ab" * 32}


def test_local_gpu_run_on_its_own_gpu_fake_nvml(tmp_path, monkeypatch, fake_venv, clean_environ):
    """The real local backend runs a GPU run (the workload faked, NVML faked): the child
    sees only dlbench's GPU variables, the monitor samples only the run's GPU, takes energy
    from the counter over the timed epochs, counts only the run's processes' memory, and
    run.json records the GPU, the scrubbed variables and the CUDA cache."""
    monkeypatch.setenv("DLBENCH_CACHE", str(tmp_path / "cache"))
    for name, value in GPU_VARIABLES.items():
        monkeypatch.setenv(name, value)
    run = gpu_suite(tmp_path, f"[{UUIDS[1]}]").runs[0]
    run.monitor_interval = 0.1
    backend = LocalBackend(venv_root=tmp_path / "venvs")
    backend.nvml = nvml = FakeNvml(counters=(1,))
    events: list[dict] = []

    def run_once(name: str):
        run_dir = RunDir(tmp_path / name)
        run_dir.path.mkdir()
        execution = backend.execute(run, run_dir, None, fake_venv, events.append)
        assert execution.exit_code == 0, run_dir.file("output.log").read_text()
        return run_dir, execution

    run_dir, execution = run_once("first")
    child = json.loads(run_dir.file("env.json").read_text())
    assert {k: child.get(k) for k in GPU_VARIABLES} == {
        **dict.fromkeys(GPU_VARIABLES), "CUDA_VISIBLE_DEVICES": UUIDS[1], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert [e["phase"] for e in events] == ["begin", "end"] * 2   # the runner still sees every event
    recorded = execution.recorded
    assert recorded["environment_scrubbed"] == dict(sorted(GPU_VARIABLES.items()))
    assert recorded["gpus"] == {"requested": [UUIDS[1]], "indices": [1], "uuids": [UUIDS[1]], "enforced": False}
    cache = recorded["cuda_cache"]
    assert cache["path"] == child["CUDA_CACHE_PATH"] and cache["bytes_after"] - cache["bytes_before"] == 4096
    assert cache["ptx_compiled"] is True

    lines = [json.loads(line) for line in run_dir.file(monitor.FILENAME).read_text().splitlines()]
    samples = [line for line in lines if "timed" not in line]
    marks = [line for line in lines if "timed" in line]
    assert samples and all([g["index"] for g in line["gpus"]] == [1] for line in samples)
    assert [(m["timed"], m["epoch"]) for m in marks] == [("begin", 1), ("end", 1), ("begin", 2), ("end", 2)]
    summary = monitor_summary.run_summary(run_dir.path, 0.1)
    timed_s = sum(end["t"] - begin["t"] for begin, end in zip(marks[::2], marks[1::2]))
    assert summary["energy_method"] == "nvml_total_energy_counter"
    assert summary["timed_epochs"] == 2 and summary["timed_images"] == 2000
    assert summary["timed_energy_j"] == pytest.approx(300 * timed_s, rel=0.1)
    assert summary["energy_per_train_image_j"] == pytest.approx(summary["timed_energy_j"] / 2000, rel=1e-3)
    assert summary["gpus"][0]["process_memory_mb"]["peak"] == 256.0   # its one process, not the machine's
    assert summary["process_memory_note"] is None
    assert schema_error("run", {**RECORD, **recorded, "monitor": summary}) is None
    assert nvml.initialised == 0   # every NVML session the run opened was closed

    _, again = run_once("second")
    assert again.recorded["cuda_cache"]["ptx_compiled"] is False   # the kernels were already cached


def test_local_prepare_says_what_it_scrubs_in_one_line(tmp_path, monkeypatch, clean_environ):
    from orchestrator import images

    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/cuda/lib64")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    spec, flavour = images.get_spec("pytorch", "cpu")
    lock_sha = hashlib.sha256(flavour.lock.read_bytes()).hexdigest()
    venv = tmp_path / f"pytorch-cpu-py{spec.python}-{lock_sha[:12]}"
    venv.mkdir()
    (venv / ".dlbench-ready").write_text("")
    said: list[str] = []
    LocalBackend(venv_root=tmp_path).prepare("pytorch", "cpu", said.append)
    assert [line for line in said if "kept from" in line] == [
        "kept from the workload's environment (they change GPU behaviour; recorded in run.json as "
        "environment_scrubbed): LD_LIBRARY_PATH, TF_CPP_MIN_LOG_LEVEL"]


def test_preflight_names_a_gpu_this_host_lacks_fake_nvml(tmp_path):
    backend = LocalBackend(venv_root=tmp_path)
    backend.nvml = FakeNvml()
    backend.preflight(gpu_suite(tmp_path, f"[1, {UUIDS[0]}]"))   # both are here
    for gpus, named in (("[2]", "2"), ("[GPU-99999999-9999-4999-8999-999999999999]",
                                        "'GPU-99999999-9999-4999-8999-999999999999'")):
        suite = gpu_suite(tmp_path, gpus)
        with pytest.raises(DlbenchError) as info:
            backend.preflight(suite)
        assert str(info.value) == (f"{suite.path}: gpus: {named} is not a GPU of this host (nvidia-smi -L "
                                   "lists them, numbered as NVML and dlbench number them)")


def test_preflight_refuses_more_parallel_workers_than_gpus_fake_nvml(tmp_path):
    backend = LocalBackend(venv_root=tmp_path)
    backend.nvml = FakeNvml()  # two GPUs
    path = tmp_path / "parallel.yaml"
    path.write_text("name: g\nruns: [{framework: pytorch, api: eager, device: gpu, synthetic: true, "
                    "parallel: {workers: 2}}]\n")
    backend.preflight(load_suite(path))  # one worker per GPU: fine
    path.write_text(path.read_text().replace("workers: 2", "workers: 3"))
    with pytest.raises(DlbenchError, match=r"parallel.workers: 3 workers but this host has 2 GPU\(s\)"):
        backend.preflight(load_suite(path))


# -- the monitor: only the run's GPUs; energy over the timed epochs -------------------

class Steady:
    def read(self):
        return {"cpu_percent": 100.0, "memory_mb": 256.0}

    def pids(self):
        return {os.getpid()}

    def close(self):
        pass


def test_monitor_samples_only_the_selected_gpus_fake_nvml(tmp_path):
    nvml = FakeNvml()
    mon = monitor.Monitor(Steady, tmp_path / "m.jsonl", 0.05, gpus=[UUIDS[1]], nvml=nvml).start()
    mon.observe({"event": "timed", "phase": "begin", "epoch": 1})
    time.sleep(0.2)
    mon.observe({"event": "timed", "phase": "end", "epoch": 1, "images": 64})
    mon.observe({"event": "epoch", "epoch": 1})   # not a timed edge: nothing marked
    assert mon.gpus_used([UUIDS[1]]) == {"requested": [UUIDS[1]], "indices": [1], "uuids": [UUIDS[1]]}
    mon.stop()
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert {g["index"] for line in lines for g in line.get("gpus", [])} == {1}
    assert [line["counters"][0]["index"] for line in lines if "timed" in line] == [1, 1]
    summary = monitor_summary.summarize(tmp_path / "m.jsonl")
    assert summary["samples"] == len(lines) - 2 and [g["index"] for g in summary["gpus"]] == [1]
    assert summary["gpus"][0]["process_memory_mb"] == {"peak": 256.0, "mean": 256.0}  # this process only
    assert nvml.initialised == 0


def test_one_gpu_named_by_index_and_uuid_is_sampled_once_fake_nvml():
    sampler = monitor.GpuSampler(FakeNvml(), [0, UUIDS[0]])
    assert [g["index"] for g in sampler.read()] == [0] and len(sampler.counters()) == 1
    assert sampler.resolved == [(0, UUIDS[0]), (0, UUIDS[0])] and sampler.missing() == []
    sampler.close()


def test_a_cpu_run_samples_no_gpu_and_marks_nothing_fake_nvml(tmp_path):
    nvml = FakeNvml()
    mon = monitor.Monitor(Steady, tmp_path / "m.jsonl", 0.05, gpus=[], nvml=nvml).start()
    mon.observe({"event": "timed", "phase": "begin", "epoch": 1})
    time.sleep(0.12)
    mon.stop()
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines and all(set(line) == {"t", "cpu_percent", "memory_mb"} for line in lines)
    assert nvml.initialised == 0


def sample(t: float, watts: float | None = 100.0, index: int = 0) -> dict:
    return {"t": t, "cpu_percent": 100.0, "memory_mb": 1.0,
            "gpus": [{"index": index, "util_percent": 90, "memory_mb": 1.0, "power_w": watts,
                      "process_memory_mb": None}]}


def mark(t: float, phase: str, epoch, energy_mj=None, watts=100.0, images=1000, index=0) -> dict:
    line = {"t": t, "timed": phase, "epoch": epoch,
            "counters": [{"index": index, "energy_mj": energy_mj, "power_w": watts}]}
    return {**line, "images": images} if phase == "end" else line


def test_timed_energy_from_the_counter_over_the_timed_epochs_only(tmp_path):
    """Warm-up (0-10 s) and evaluation (after 30 s) draw power too: not counted per image."""
    path = write_lines(tmp_path / "m.jsonl", [
        sample(0.0), mark(10.0, "begin", 1, 5_000_000), sample(15.0),
        mark(20.0, "end", 1, 6_000_000), mark(20.5, "begin", 2, 6_050_000),
        mark(30.0, "end", 2, 7_000_000), sample(40.0)])
    summary = monitor_summary.summarize(path)
    assert summary["samples"] == 3 and summary["gpu_energy_j"] == 4000.0   # whole run, as before
    assert summary["energy_method"] == "nvml_total_energy_counter"
    assert summary["timed_energy_j"] == 1000.0 + 950.0 and summary["timed_images"] == 2000
    assert monitor_summary.energy_per_train_image(summary, {"status": "ok"}) == pytest.approx(1950.0 / 2000)
    assert monitor_summary.energy_per_train_image(summary, {"status": "failed"}) is None


@pytest.mark.parametrize("counters", [
    pytest.param((None, None), id="no counter on the board"),
    pytest.param((7_000_000, 6_000_000), id="the counter went back (a driver reload)"),
])
def test_without_a_usable_counter_power_is_integrated_over_the_timed_epochs(tmp_path, counters):
    begin, end = counters
    path = write_lines(tmp_path / "m.jsonl", [
        sample(0.0, 500.0), mark(10.0, "begin", 1, begin, watts=100.0), sample(15.0, 200.0),
        mark(20.0, "end", 1, end, watts=100.0), sample(30.0, 500.0)])
    summary = monitor_summary.summarize(path)
    assert summary["energy_method"] == "power_integration"
    assert summary["timed_energy_j"] == 5 * 150.0 * 2   # the edges' readings and the sample inside


def test_no_timed_epoch_or_no_power_means_no_energy_per_image(tmp_path):
    whole_run = monitor_summary.summarize(write_lines(tmp_path / "a.jsonl", [sample(0.0), sample(1.0)]))
    assert whole_run["gpu_energy_j"] == 100.0
    assert (whole_run["energy_method"], whole_run["timed_energy_j"], whole_run["timed_epochs"]) == (None, None, 0)
    no_power = monitor_summary.summarize(write_lines(tmp_path / "b.jsonl", [
        mark(0.0, "begin", 1, watts=None), sample(0.5, None), mark(1.0, "end", 1, watts=None)]))
    assert no_power["energy_method"] is None and no_power["timed_energy_j"] is None
    assert no_power["timed_images"] == 1000


def test_timed_lines_the_workload_could_forge_are_ignored(tmp_path):
    """The run directory is writable by the workload: odd lines are skipped, never a crash."""
    path = write_lines(tmp_path / "m.jsonl", [
        sample(0.0), mark(1.0, "begin", [1]), mark(2.0, "end", [1]),          # unhashable epoch
        {"t": 3.0, "timed": "begin", "epoch": 2, "counters": "x"},
        {"t": 4.0, "timed": "end", "epoch": 2, "images": "many", "counters": [{"index": [0]}]},
        mark(6.0, "end", 3, 10), mark(5.0, "begin", 4, 10), ["not", "an", "object"],
        {"timed": "begin"}, sample(7.0)])
    summary = monitor_summary.summarize(path)
    assert summary["samples"] == 2 and summary["timed_epochs"] == 0 and summary["energy_method"] is None


def test_process_memory_the_driver_does_not_give_is_null_and_said(tmp_path):
    summary = monitor_summary.summarize(write_lines(tmp_path / "m.jsonl", [sample(0.0), sample(1.0)]))
    assert summary["gpus"][0]["process_memory_mb"] == {"peak": None, "mean": None}
    assert summary["process_memory_note"] == monitor_summary.NO_PROCESS_MEMORY
    cpu_only = monitor_summary.summarize(write_lines(tmp_path / "c.jsonl", [{"t": 0.0, "cpu_percent": 1.0}]))
    assert cpu_only["process_memory_note"] is None


# -- system.json: each GPU described ---------------------------------------------------

class DescribedNvml(FakeNvml):
    """FakeNvml with what sysinfo asks: GPU 0 answers everything, GPU 1 nothing optional."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def _only_gpu0(self, handle, value):
        if handle != 0:
            raise NotSupported("NVML_ERROR_NOT_SUPPORTED")
        return value

    def nvmlDeviceGetUUID(self, handle):
        return self._only_gpu0(handle, UUIDS[0])

    def nvmlDeviceGetPciInfo(self, handle):
        return self._only_gpu0(handle, SimpleNamespace(busId=b"00000000:19:00.0"))

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return self._only_gpu0(handle, (9, 0))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._only_gpu0(handle, 700_000)

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return self._only_gpu0(handle, {1: 1980, 2: 3201}[clock])

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        return self._only_gpu0(handle, {1: 1980, 2: 3201}[clock] + 10)

    def nvmlDeviceGetPersistenceMode(self, handle):
        return self._only_gpu0(handle, 1)

    def nvmlDeviceGetMigMode(self, handle):
        return self._only_gpu0(handle, (0, 0))

    def nvmlDeviceGetEccMode(self, handle):
        return self._only_gpu0(handle, (1, 1))


def test_system_json_describes_each_gpu_fake_nvml():
    nvml = DescribedNvml()
    found = sysinfo.gpus(nvml)
    assert found[0] == {"index": 0, "name": "NVIDIA H200", "memory_mb": 81920, "driver": "550.54.15",
                        "cuda_driver": "12.4", "uuid": UUIDS[0], "pci_bus_id": "00000000:19:00.0",
                        "compute_capability": "9.0", "power_limit_w": 700.0, "sm_clock_mhz": 1980,
                        "memory_clock_mhz": 3201, "max_sm_clock_mhz": 1990, "max_memory_clock_mhz": 3211,
                        "persistence_mode": True, "mig_mode": False, "ecc_mode": True}
    unknown = {k for k, v in found[1].items() if v is None}
    assert unknown == {"uuid", "pci_bus_id", "compute_capability", "power_limit_w", "sm_clock_mhz",
                       "memory_clock_mhz", "max_sm_clock_mhz", "max_memory_clock_mhz",
                       "persistence_mode", "mig_mode", "ecc_mode"}
    assert nvml.initialised == 0
    system = {**sysinfo.collect(), "gpus": found}
    assert schema_error("system", system) is None
    problem = schema_error("system", {**system, "gpus": [{**found[0], "compute_capability": "sm_90"}]})
    assert problem is not None and "compute_capability" in problem
