"""Host-side resource monitor for the life of one run -> runs/<id>/monitor.jsonl.

One JSON object per line: t (seconds since the monitor started), cpu_percent
(100 = one core busy), memory_mb, and where NVML sees the run's GPUs (its `gpus`, else
every GPU; none for a cpu run), gpus: [{index, util_percent, memory_mb, power_w,
process_memory_mb}]. CPU and memory come from the host sampler of the backend that runs
the workload (Backend.host_sampler: e.g. an engine's stats API, or ProcessTreeSampler
below over a process on this host); GPUs from NVML. Without a GPU (no driver, NVML init
fails) lines simply carry no `gpus`. On a GPU run, each edge of a timed epoch adds a line
{t, timed: begin|end, epoch, [images], counters: [{index, energy_mj, power_w}]}: the
workload's event lines say when (Monitor.observe). This module never names a backend:
each backend hands it its sampler (Backend.monitor_run).

The summary (peak / mean, GPU energy, energy over the timed epochs) is computed from the
file afterwards, so it can be recomputed from a results directory alone.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TextIO

import psutil

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

    # optional: pids() -> set[int] | None, the run's process IDs as this host numbers them,
    # to find the run's own processes among those NVML lists on its GPUs


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

    def pids(self) -> set[int]:
        return {proc.pid for proc in self._tree()}

    def close(self) -> None:
        pass


# -- GPUs ---------------------------------------------------------------------------

class GpuSampler:
    """The run's GPUs as NVML sees them: `selection` (NVML indices or GPU UUIDs, as the
    suite's `gpus` gives them) or, when None, every GPU; [] samples none. `available` is
    False where NVML cannot initialise (no driver, no GPU) or nothing is selected: then
    read() returns [] and nothing is an error. `resolved`: (NVML index, UUID) of each
    selected GPU, None where NVML does not know it."""

    def __init__(self, nvml=None, selection: list | None = None):
        self.selection = selection
        self.devices: list[tuple[int, Any]] = []   # (NVML index, handle) sampled
        self.resolved: list[tuple[int | None, str | None]] = []
        self.available = False
        if selection == []:
            return  # a cpu run: its GPUs are none, whatever the host has
        if nvml is None:
            import pynvml

            nvml = pynvml
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - NVMLError or a missing library: no GPUs here
            return
        self.available = True
        try:
            entries = list(selection) if selection is not None else list(range(nvml.nvmlDeviceGetCount()))
        except Exception:  # noqa: BLE001
            entries = []
        for entry in entries:
            handle = self._handle(entry)
            if handle is None:
                self.resolved.append((None, None))
                continue
            index = entry if isinstance(entry, int) else self._try(lambda h=handle: nvml.nvmlDeviceGetIndex(h))
            # sampled lines name each GPU by its index; one GPU named twice (index and UUID) once
            if index is not None and index not in (known for known, _ in self.devices):
                self.devices.append((index, handle))
            self.resolved.append((index, self._try(lambda h=handle: _text(nvml.nvmlDeviceGetUUID(h)))))

    def _handle(self, entry):
        if isinstance(entry, int):
            return self._try(lambda: self.nvml.nvmlDeviceGetHandleByIndex(entry))
        return self._try(lambda: self.nvml.nvmlDeviceGetHandleByUUID(entry))

    def missing(self) -> list:
        """The selected entries NVML does not know (only meaningful when available)."""
        return [entry for entry, (index, uuid) in zip(self.selection or [], self.resolved)
                if index is None and uuid is None]

    def read(self, pids: set[int] | None = None) -> list[dict]:
        """One sample per GPU; process_memory_mb: what the run's processes (`pids`) hold
        there, None where the driver does not say (or no process of the run is seen)."""
        out = []
        for index, handle in self.devices:
            out.append({"index": index,
                        "util_percent": self._try(lambda h=handle: self.nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        "memory_mb": self._try(lambda h=handle: self.nvml.nvmlDeviceGetMemoryInfo(h).used / MB),
                        # milliwatts; some boards do not report power (NotSupported)
                        "power_w": self._power_w(handle),
                        "process_memory_mb": self._process_memory_mb(handle, pids)})
        return out

    def counters(self) -> list[dict]:
        """Each GPU's total-energy counter (mJ since the driver loaded; None where the board
        has none) and power now: what the monitor records at a timed epoch's edges."""
        return [{"index": index,
                 "energy_mj": self._try(lambda h=handle: int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h))),
                 "power_w": self._power_w(handle)}
                for index, handle in self.devices]

    def _power_w(self, handle) -> float | None:
        return self._try(lambda: self.nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)

    def _process_memory_mb(self, handle, pids: set[int] | None) -> float | None:
        if not pids:
            return None
        processes = self._try(lambda: self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        used = [getattr(p, "usedGpuMemory", None) for p in processes if getattr(p, "pid", None) in pids]
        known = [u for u in used if isinstance(u, int)]
        if not used or len(known) < len(used):  # None: the driver does not say (WDDM, MIG)
            return None
        return sum(known) / MB

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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    """Samples `host` (and the run's GPUs) every `interval` seconds into a JSON-lines file,
    and marks each timed epoch's edges there (observe()). open() / start() / stop() are
    idempotent; the file is created by open() (or start()), never through a link; stop()
    on a monitor never started only closes what open() made.

    gpus: the run's GPUs (NVML indices or UUIDs; None: every GPU; []: none, a cpu run);
    nvml: pynvml or a stand-in; gpu_sampler: a ready sampler instead of both."""

    def __init__(self, host_sampler_factory: Callable[[], HostSampler], path: Path,
                 interval: float = DEFAULT_INTERVAL_S, gpu_sampler: GpuSampler | None = None,
                 gpus: list | None = None, nvml=None):
        self._factory = host_sampler_factory
        self.path = Path(path)
        self.interval = float(interval or DEFAULT_INTERVAL_S)
        self._gpu_factory = (lambda: gpu_sampler) if gpu_sampler is not None else \
            (lambda: GpuSampler(nvml, gpus))
        self.gpu: GpuSampler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._out: TextIO | None = None
        self._write_lock = threading.Lock()
        self._started_at = 0.0
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
                fd, self._fd = self._fd, None  # the sampling loop and observe() share it now
                self._out = os.fdopen(fd, "a", encoding="utf-8")
                self.gpu = self._gpu_factory()
                self._started_at = time.monotonic()
                self._thread = threading.Thread(target=self._loop, name=f"monitor-{self.path.parent.name}",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._write_lock:
            if self._out is not None:
                try:
                    self._out.close()
                except OSError:
                    pass
                self._out = None
        if self.gpu is not None:
            self.gpu.close()
        if self._fd is not None:  # opened, never started
            os.close(self._fd)
            self._fd = None

    def gpus_used(self, requested: list | None) -> dict:
        """run.json's `gpus`: what the run asked for and the GPUs that are, by NVML index and
        UUID (None where NVML is not there to say)."""
        gpu = self.gpu
        if gpu is None or not gpu.available:
            return {"requested": requested, "indices": None, "uuids": None}
        return {"requested": requested, "indices": [index for index, _ in gpu.resolved],
                "uuids": [uuid for _, uuid in gpu.resolved]}

    def observe(self, event: dict) -> None:
        """An event line of the workload: at each edge of a timed epoch, the GPUs'
        energy counters and power go into the file (a `timed` line), so the summary can
        take energy over the timed epochs only."""
        gpu = self.gpu
        if gpu is None or not gpu.devices or event.get("event") != "timed":
            return
        phase, epoch, images = event.get("phase"), event.get("epoch"), event.get("images")
        if phase not in ("begin", "end") or not _count(epoch) or (phase == "end" and not _count(images)):
            return  # not the harness's shape: ignored, never trusted
        line: dict[str, Any] = {"t": round(time.monotonic() - self._started_at, 3), "timed": phase,
                                "epoch": epoch, **({"images": images} if phase == "end" else {}),
                                "counters": gpu.counters()}
        self._write(line)

    def _write(self, line: dict) -> bool:
        with self._write_lock:
            if self._out is None:
                return False
            try:
                self._out.write(json.dumps(line) + "\n")
                self._out.flush()
            except OSError:  # results disk full or gone: the runner reports that
                self._out = None
                return False
        return True

    def _loop(self) -> None:
        host: HostSampler | None
        try:
            host = self._factory()
        except Exception:  # noqa: BLE001 - e.g. the process already exited: record nothing
            host = None
        gpu = self.gpu
        try:
            while True:
                line: dict[str, Any] = {"t": round(time.monotonic() - self._started_at, 3)}
                sample = host.read() if host is not None else None
                if sample:
                    line.update({k: (round(v, 2) if v is not None else None) for k, v in sample.items()})
                if gpu is not None and gpu.available:
                    line["gpus"] = gpu.read(_pids(host) if gpu.devices else None)
                if len(line) > 1 and not self._write(line):
                    break  # samples are best effort
                if self._stop.wait(self.interval):
                    break
        finally:
            if host is not None:
                host.close()


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _pids(host: HostSampler | None) -> set[int] | None:
    """The run's processes as the host sees them, where its sampler can tell."""
    pids = getattr(host, "pids", None)
    try:
        return pids() if pids is not None else None
    except Exception:  # noqa: BLE001 - the run went away between two samples
        return None
