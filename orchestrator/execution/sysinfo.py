"""The host a suite ran on (system.json): what a reader needs to judge the numbers."""
from __future__ import annotations

import os
import platform

import psutil

from contract.hostinfo import cpu_model_name


def gpus(nvml=None) -> list[dict]:
    """GPUs NVML can see; an empty list (not an error) where there is no driver. Each
    property NVML cannot give for a board (NotSupported, no permission) is None.
    orchestrator.images reads `driver` and `compute_capability`: keep those names."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no library: simply no GPUs
        return []
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        return [_gpu(nvml, index, driver, f"{cuda // 1000}.{cuda % 1000 // 10}")
                for index in range(nvml.nvmlDeviceGetCount())]
    finally:
        nvml.nvmlShutdown()


def _gpu(nvml, index: int, driver: str, cuda_driver: str) -> dict:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def ask(function: str, *args, convert=lambda value: value):
        try:
            return convert(getattr(nvml, function)(handle, *args))
        except Exception:  # noqa: BLE001 - this board (or this NVML) does not say: unknown
            return None

    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    return {"index": index, "name": _text(nvml.nvmlDeviceGetName(handle)),
            "memory_mb": nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20, "driver": driver,
            "cuda_driver": cuda_driver,
            "uuid": ask("nvmlDeviceGetUUID", convert=_text),
            "pci_bus_id": ask("nvmlDeviceGetPciInfo", convert=lambda pci: _text(pci.busId)),
            "compute_capability": ask("nvmlDeviceGetCudaComputeCapability",
                                      convert=lambda cc: f"{cc[0]}.{cc[1]}"),
            "power_limit_w": ask("nvmlDeviceGetEnforcedPowerLimit", convert=lambda mw: mw / 1000),
            "sm_clock_mhz": ask("nvmlDeviceGetClockInfo", sm),
            "memory_clock_mhz": ask("nvmlDeviceGetClockInfo", mem),
            "max_sm_clock_mhz": ask("nvmlDeviceGetMaxClockInfo", sm),
            "max_memory_clock_mhz": ask("nvmlDeviceGetMaxClockInfo", mem),
            "persistence_mode": ask("nvmlDeviceGetPersistenceMode", convert=bool),
            # (current, pending) for MIG and ECC: the first is what is in force now
            "mig_mode": ask("nvmlDeviceGetMigMode", convert=lambda modes: bool(modes[0])),
            "ecc_mode": ask("nvmlDeviceGetEccMode", convert=lambda modes: bool(modes[0]))}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def docker_info(client) -> dict | None:
    if client is None:
        return None
    version = client.version()
    info = client.info()
    return {"version": version.get("Version"), "api_version": version.get("ApiVersion"),
            "storage_driver": info.get("Driver"), "cgroup_version": info.get("CgroupVersion"),
            "runtimes": sorted(info.get("Runtimes", {})),
            "default_runtime": info.get("DefaultRuntime")}


def collect(docker_client=None) -> dict:
    uname = platform.uname()
    freq = psutil.cpu_freq()
    return {
        "schema_version": 1,
        "os": _os_release(), "kernel": uname.release, "machine": uname.machine,
        "cpu": {"model": cpu_model_name(), "logical_cores": psutil.cpu_count(),
                "physical_cores": psutil.cpu_count(logical=False),
                "max_mhz": round(freq.max, 1) if freq and freq.max else None,
                "available_to_dlbench": len(os.sched_getaffinity(0))},
        "memory_mb": psutil.virtual_memory().total // 2**20,
        "python": platform.python_version(),
        "gpus": gpus(),
        "docker": docker_info(docker_client),
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or platform.platform()
    except OSError:
        return platform.platform()
