"""The host a suite ran on (system.json): what a reader needs to judge the numbers."""
from __future__ import annotations

import os
import platform

import psutil

from contract.hostinfo import cpu_model_name


def gpus() -> list[dict]:
    """GPUs NVML can see; an empty list (not an error) where there is no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no library: simply no GPUs
        return []
    try:
        found = []
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found.append({"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
                          "memory_mb": memory.total // 2**20, "driver": driver,
                          "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}"})
        return found
    finally:
        pynvml.nvmlShutdown()


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
