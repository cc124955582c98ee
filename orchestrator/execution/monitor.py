"""Host-side resource monitor for the life of one run -> runs/<id>/monitor.jsonl.

One JSON object per line: t (seconds since the monitor started), cpu_percent
(100 = one core busy), memory_mb, and where NVML sees GPUs, gpus: [{index,
util_percent, memory_mb, power_w}]. CPU and memory come from the host sampler of the
backend that runs the workload (Backend.host_sampler: e.g. an engine's stats API, or
ProcessTreeSampler below over a process on this host); GPUs from NVML. Without a GPU
(no driver, NVML init fails) lines simply carry no `gpus`. This module never names a
backend: each backend hands it its sampler (Backend.monitor_run).

The summary (peak / mean, GPU energy) is computed from the file afterwards, so it
can be recomputed from a results directory alone.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psutil

from orchestrator.fileio import read_json_or_none

DEFAULT_INTERVAL_S = 0.5
FILENAME = "monitor.jsonl"
MB = 2 ** 20


# -- CPU / memory samplers: read() -> {"cpu_percent", "memory_mb"} or None ---------

class HostSampler(Protocol):
    """CPU % and memory of one running workload, as a backend can see them."""

    def read(self) -> dict | None:
        """{"cpu_percent": float | None, "memory_mb": float}, or None when nothing runs."""

    def close(self) -> None:
        """Release what read() holds (a stream, a handle); called once, at the end."""


class ProcessTreeSampler:
    """A process on this host and all its children, via psutil. CPU % comes from
    the tree's summed CPU time between two reads, so children that appear are counted."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self._last: tuple[float, float] | None = None

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def read(self) -> dict | None:
        cpu_s, rss = 0.0, 0
        for proc in self._tree():
            try:
                times, mem = proc.cpu_times(), proc.memory_info()
            except psutil.Error:
                continue  # exited between listing and reading
            cpu_s += times.user + times.system + times.children_user + times.children_system
            rss += mem.rss
        if not rss:
            return None
        now, last = time.monotonic(), self._last
        self._last = (now, cpu_s)
        cpu = max(0.0, (cpu_s - last[1]) / (now - last[0]) * 100) if last and now > last[0] else None
        return {"cpu_percent": cpu, "memory_mb": rss / MB}

    def close(self) -> None:
        pass


# -- GPUs ---------------------------------------------------------------------------

class GpuSampler:
    """Every GPU NVML sees. `available` is False where NVML cannot initialise (no driver,
    no GPU): then read() returns [] and nothing is an error."""

    def __init__(self, nvml=None):
        if nvml is None:
            import pynvml

            nvml = pynvml
        self.nvml = nvml
        self.handles: list = []
        try:
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - NVMLError or a missing library: no GPUs here
            self.available = False
            return
        self.available = True
        try:
            self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001
            self.handles = []

    def read(self) -> list[dict]:
        out = []
        for index, handle in enumerate(self.handles):
            out.append({"index": index,
                        "util_percent": self._try(lambda h=handle: self.nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        "memory_mb": self._try(lambda h=handle: self.nvml.nvmlDeviceGetMemoryInfo(h).used / MB),
                        # milliwatts; some boards do not report power (NotSupported)
                        "power_w": self._try(lambda h=handle: self.nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)})
        return out

    @staticmethod
    def _try(read):
        try:
            return read()
        except Exception:  # noqa: BLE001 - one unsupported counter must not lose the others
            return None

    def close(self) -> None:
        if self.available:
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


# -- the monitor --------------------------------------------------------------------

def open_append_regular(path: Path) -> int | None:
    """A descriptor appending to the regular file `path`, created if absent; None when it
    cannot be: a link there (a workload can write into its run directory and plant one to
    a host file) or any other non-regular file is never followed or opened for writing,
    and is left for the runner, which refuses to collect such a run directory."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # decided before opening: a FIFO would
            return None                                # block, a device act
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o666)
    except OSError:  # ELOOP for a link; ENXIO for a FIFO without a reader; a full disk
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO with a reader, a device
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd


class Monitor:
    """Samples `host` (and GPUs) every `interval` seconds into a JSON-lines file.
    open() / start() / stop() are idempotent; the file is created by open() (or start()),
    never through a link; stop() on a monitor never started only closes what open() made."""

    def __init__(self, host_sampler_factory: Callable[[], HostSampler], path: Path,
                 interval: float = DEFAULT_INTERVAL_S, gpu_sampler: GpuSampler | None = None):
        self._factory = host_sampler_factory
        self.path = Path(path)
        self.interval = float(interval or DEFAULT_INTERVAL_S)
        self._gpu = gpu_sampler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._opened = self._started = False

    def open(self) -> Monitor:
        """Create the file now (a backend calls this before the workload starts, which can
        write into its run directory). Idempotent; start() does it if nothing did."""
        if not self._opened:
            self._opened = True
            self._fd = open_append_regular(self.path)
        return self

    def start(self) -> Monitor:
        if not self._started:
            self._started = True
            self.open()
            if self._fd is not None:  # else refused (a planted link) or unwritable: no samples
                fd, self._fd = self._fd, None  # the loop owns it now
                self._thread = threading.Thread(target=self._loop, args=(fd,),
                                                name=f"monitor-{self.path.parent.name}", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._fd is not None:  # opened, never started
            os.close(self._fd)
            self._fd = None

    def _loop(self, fd: int) -> None:
        host: HostSampler | None
        try:
            host = self._factory()
        except Exception:  # noqa: BLE001 - e.g. the process already exited: record nothing
            host = None
        gpu = self._gpu or GpuSampler()
        started = time.monotonic()
        try:
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                while True:
                    line: dict[str, Any] = {"t": round(time.monotonic() - started, 3)}
                    sample = host.read() if host is not None else None
                    if sample:
                        line.update({k: (round(v, 2) if v is not None else None) for k, v in sample.items()})
                    if gpu.available:
                        line["gpus"] = gpu.read()
                    if len(line) > 1:
                        out.write(json.dumps(line) + "\n")
                        out.flush()
                    if self._stop.wait(self.interval):
                        break
        except OSError:
            pass  # results disk full or gone: the runner reports that; samples are best effort
        finally:
            if host is not None:
                host.close()
            gpu.close()


# -- summary ------------------------------------------------------------------------

def _peak_mean(samples: list[float | None]) -> dict:
    values = [v for v in samples if v is not None]
    if not values:
        return {"peak": None, "mean": None}
    return {"peak": round(max(values), 2), "mean": round(sum(values) / len(values), 2)}


def _energy_j(times: list[float], watts: list[float | None]) -> float | None:
    """Trapezoidal integral of power over time."""
    points = [(t, w) for t, w in zip(times, watts) if w is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(points, points[1:]))


def summarize(path: Path, interval: float | None = None) -> dict | None:
    """Peak / mean per quantity and, where power is reported, GPU energy in joules."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    times = [line["t"] for line in lines]
    gpus: list[dict] = []
    summary: dict[str, Any] = {
        "interval_s": interval, "samples": len(lines),
        "duration_s": round(times[-1] - times[0], 3) if lines else 0.0,
        "cpu_percent": _peak_mean([line.get("cpu_percent") for line in lines]),
        "memory_mb": _peak_mean([line.get("memory_mb") for line in lines]),
        "gpus": gpus, "gpu_energy_j": None}
    by_index: dict[int, list[tuple[float, dict]]] = {}
    for line in lines:
        for gpu in line.get("gpus") or []:
            by_index.setdefault(gpu["index"], []).append((line["t"], gpu))
    energies: list[float | None] = []
    for index, samples in sorted(by_index.items()):
        energy = _energy_j([t for t, _ in samples], [g.get("power_w") for _, g in samples])
        energies.append(energy)
        gpus.append({"index": index,
                     "util_percent": _peak_mean([g.get("util_percent") for _, g in samples]),
                     "memory_mb": _peak_mean([g.get("memory_mb") for _, g in samples]),
                     "power_w": _peak_mean([g.get("power_w") for _, g in samples]),
                     "energy_j": round(energy, 3) if energy is not None else None})
    known = [e for e in energies if e is not None]
    if energies and len(known) == len(energies):
        summary["gpu_energy_j"] = round(sum(known), 3)
    return summary


def energy_per_train_image(summary: dict | None, metrics: dict | None) -> float | None:
    """The whole run's GPU energy divided by the training images it processed
    (epochs x train samples). Start-up and evaluation are included, so it is an
    upper bound, and one a reader can recompute from monitor.jsonl."""
    if not summary or summary.get("gpu_energy_j") is None or not metrics or metrics.get("status") != "ok":
        return None
    images = metrics["dataset"]["train_samples"] * len(metrics["epochs"])
    return summary["gpu_energy_j"] / images if images else None


def run_summary(run_path: Path, interval: float | None) -> dict | None:
    """run.json's `monitor`: the summary of monitor.jsonl plus energy per training image."""
    summary = summarize(Path(run_path) / "monitor.jsonl", interval)
    if summary is not None:
        metrics = read_json_or_none(Path(run_path) / "metrics.json")
        per_image = energy_per_train_image(summary, metrics)
        summary["energy_per_train_image_j"] = round(per_image, 6) if per_image is not None else None
    return summary
