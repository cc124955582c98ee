"""The host-side resource monitor: real process sampling, the real no-GPU path, and
(NVML faked: no GPU on this machine) the GPU series and energy summary."""
import json
import os
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from orchestrator.execution import monitor, monitor_summary
from orchestrator.execution.backends.docker import docker_sample
from orchestrator.execution.backends.local import LocalBackend
from orchestrator.results.directory import RunDir, schema_error


def busy_child(seconds: float) -> subprocess.Popen:
    """A real process tree: a parent that spins a CPU and holds ~50 MB, with a child."""
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']);"
            f"b = bytearray(50 * 2**20); end = time.time() + {seconds}\nwhile time.time() < end: pass\nc.kill()")
    return subprocess.Popen([sys.executable, "-c", code])


def local_monitor(pid: int, run_dir: RunDir, interval: float) -> monitor.Monitor:
    """The monitor the local backend starts for a workload process (its monitor hook)."""
    run = SimpleNamespace(monitor_interval=interval, spec={"device": "cpu"}, gpus=None)
    return LocalBackend(venv_root=run_dir.path).monitor_run(run, run_dir, pid)


def test_process_tree_monitor_records_real_cpu_and_memory(tmp_path):
    proc = busy_child(2.0)
    mon = local_monitor(proc.pid, RunDir(tmp_path), 0.2).start()
    proc.wait()
    mon.stop()
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert len(lines) >= 5
    assert all(set(line) >= {"t", "cpu_percent", "memory_mb"} for line in lines)
    assert [line["t"] for line in lines] == sorted(line["t"] for line in lines)
    summary = monitor_summary.run_summary(tmp_path, 0.2)
    assert summary["cpu_percent"]["peak"] > 50          # one core spinning
    assert summary["memory_mb"]["peak"] > 50            # the 50 MB buffer, plus two interpreters
    assert summary["gpus"] == [] and summary["energy_per_train_image_j"] is None


def test_without_a_gpu_the_monitor_records_none_and_does_not_fail(no_nvidia_driver):
    gpu = monitor.GpuSampler()   # the real pynvml: init fails on this machine
    assert gpu.available is False and gpu.read() == []
    gpu.close()


class FakeNvml:
    """Stands in for pynvml where no NVIDIA GPU exists: two GPUs, the second without power."""

    def __init__(self):
        self.calls = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=90 if handle == 0 else 10)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=(1024 if handle == 0 else 512) * 2**20)

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 200_000  # mW


def test_gpu_series_and_energy_fake_nvml(tmp_path):
    proc = busy_child(1.5)
    mon = monitor.Monitor(lambda: monitor.ProcessTreeSampler(proc.pid), tmp_path / "monitor.jsonl",
                          0.1, gpu_sampler=monitor.GpuSampler(FakeNvml())).start()
    proc.wait()
    mon.stop()
    first = json.loads((tmp_path / "monitor.jsonl").read_text().splitlines()[0])
    assert first["gpus"] == [{"index": 0, "util_percent": 90, "memory_mb": 1024.0, "power_w": 200.0,
                              "process_memory_mb": None},  # this stand-in lists no processes
                             {"index": 1, "util_percent": 10, "memory_mb": 512.0, "power_w": None,
                              "process_memory_mb": None}]
    summary = monitor_summary.summarize(tmp_path / "monitor.jsonl", 0.1)
    gpu0, gpu1 = summary["gpus"]
    assert gpu0["power_w"] == {"peak": 200.0, "mean": 200.0}
    assert gpu0["energy_j"] == pytest.approx(200.0 * summary["duration_s"], rel=0.01)
    assert gpu1["energy_j"] is None and summary["gpu_energy_j"] is None  # not every GPU reports power


def test_energy_per_training_image_fake_nvml(tmp_path):
    """Over the timed epochs only (their lines from the harness's events), not the whole
    run: power integrated where the board has no energy counter (tests/unit/test_gpu_accounting.py
    has the counter and the rest)."""
    lines = [{"t": t, "cpu_percent": 100.0, "memory_mb": 500.0,
              "gpus": [{"index": 0, "util_percent": 80, "memory_mb": 900.0, "power_w": 100.0}]}
             for t in (0.0, 1.0, 2.0, 3.0)]
    lines[1:1] = [{"t": 0.5, "timed": "begin", "epoch": 1, "counters": [{"index": 0, "energy_mj": None,
                                                                         "power_w": 100.0}]}]
    lines[3:3] = [{"t": 1.5, "timed": "end", "epoch": 1, "images": 500,
                   "counters": [{"index": 0, "energy_mj": None, "power_w": 100.0}]}]
    (tmp_path / "monitor.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = {"status": "ok", "dataset": {"train_samples": 1000}, "epochs": [{}, {}]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    summary = monitor_summary.run_summary(tmp_path, 1.0)
    assert summary["samples"] == 4 and summary["gpu_energy_j"] == 300.0   # the whole run
    assert summary["timed_energy_j"] == 100.0 and summary["energy_method"] == "power_integration"
    assert summary["energy_per_train_image_j"] == pytest.approx(100.0 / 500)
    record = {"schema_version": 1, "run_id": "r", "outcome": "ok", "backend": "local",
              "started_at": "a", "finished_at": "b", "wall_s": 1.0, "batch_size": 128, "monitor": summary}
    assert schema_error("run", record) is None


def test_docker_stats_object_to_sample():
    raw = {"cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "system_cpu_usage": 20_000_000_000,
                         "online_cpus": 2},
           "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 18_000_000_000},
           "memory_stats": {"usage": 300 * 2**20, "stats": {"total_inactive_file": 100 * 2**20}}}
    assert docker_sample(raw) == {"cpu_percent": 100.0, "memory_mb": 200.0}
    first = {**raw, "precpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert docker_sample(first)["cpu_percent"] is None  # no previous sample yet
    assert docker_sample({"memory_stats": {}}) is None   # container gone


def test_a_monitor_that_never_started_stops_quietly(tmp_path):
    mon = local_monitor(999_999_999, RunDir(tmp_path), 0.5)
    mon.stop()
    started = time.monotonic()
    local_monitor(999_999_999, RunDir(tmp_path), 0.5).start().stop()  # no such pid
    assert time.monotonic() - started < 5
    assert monitor_summary.summarize(tmp_path / "absent.jsonl") is None


class Steady:
    def read(self):
        return {"cpu_percent": 100.0, "memory_mb": 256.0}

    def close(self):
        pass


NO_GPU = SimpleNamespace(available=False, read=lambda: [], close=lambda: None)


def steady_monitor(path) -> monitor.Monitor:
    return monitor.Monitor(Steady, path, 0.05, gpu_sampler=NO_GPU)


@pytest.mark.parametrize("planted", ["link", "fifo"])
def test_a_link_or_fifo_planted_at_monitor_jsonl_is_never_written_through(tmp_path, planted):
    """A workload can write its run directory: what it plants where monitor.jsonl goes is
    neither followed nor written (nor blocks on); the runner refuses the directory after."""
    outside = tmp_path / "host-file"
    outside.write_text("host file\n")
    run = tmp_path / "run"
    run.mkdir()
    path = run / monitor.FILENAME
    if planted == "link":
        path.symlink_to(outside)
    else:
        os.mkfifo(path)
    started = time.monotonic()
    steady_monitor(path).start().stop()
    assert time.monotonic() - started < 5
    assert outside.read_text() == "host file\n"
    assert path.is_symlink() if planted == "link" else stat.S_ISFIFO(path.lstat().st_mode)


def test_a_link_swapped_in_after_open_is_never_written_through(tmp_path):
    """The docker backend opens monitor.jsonl before the container starts: a link the
    workload swaps in afterwards leaves the host writing its own file, not the link's."""
    outside = tmp_path / "host-file"
    outside.write_text("host file\n")
    run = tmp_path / "run"
    run.mkdir()
    path = run / monitor.FILENAME
    mon = steady_monitor(path).open()
    assert stat.S_ISREG(path.lstat().st_mode)
    kept = run / "kept.jsonl"
    os.link(path, kept)  # to look at the host's file once the name is taken over
    path.unlink()
    path.symlink_to(outside)
    mon.start()
    time.sleep(0.2)
    mon.stop()
    assert outside.read_text() == "host file\n"
    assert json.loads(kept.read_text().splitlines()[0])["memory_mb"] == 256.0
