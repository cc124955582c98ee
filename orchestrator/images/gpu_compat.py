"""Whether a cuda image can run on this host's GPUs at all, from images.yaml alone: its
driver branch (min_driver) and the GPU architectures its kernels cover (cuda_arches, ptx).

Pure: it judges GPU entries as system.json records them (orchestrator.execution.sysinfo
.gpus()), never asks NVML itself, and refuses only on what it knows: a missing or
unreadable driver or compute capability is no reason to refuse.

CUDA's rules it applies: a kernel compiled for compute capability X.y runs on X.z for
z >= y (same major); PTX for X.y is compiled by the driver for any GPU of X.y or newer.
"""
from __future__ import annotations

from orchestrator.images.spec import FlavourSpec, ImageSpec, load_images, version_key


def environment_problem(framework: str, flavour: str, gpus: list[dict],
                        images: dict[str, ImageSpec] | None = None) -> str | None:
    """Why framework/flavour cannot run on these GPUs (one sentence), or None. `gpus`: the
    system.json entries of the GPUs the run will see ("driver", "compute_capability",
    "index", "name"). A cpu flavour, or one images.yaml does not list, is not judged here."""
    fl = _cuda_flavour(framework, flavour, images)
    if fl is None:
        return None
    return driver_problem(framework, fl, gpus) or arch_problem(framework, fl, gpus)


def _cuda_flavour(framework: str, flavour: str, images: dict[str, ImageSpec] | None
                  ) -> FlavourSpec | None:
    images = images if images is not None else load_images(check_locks=False)
    spec = images.get(framework)
    fl = spec.flavours.get(flavour) if spec else None
    return fl if fl is not None and fl.cuda is not None else None


def driver_problem(framework: str, fl: FlavourSpec, gpus: list[dict]) -> str | None:
    """The host's driver is older than the branch the image's CUDA needs."""
    if fl.min_driver is None:
        return None
    for gpu in gpus:
        driver = _version(gpu.get("driver"))
        if driver is not None and driver < version_key(fl.min_driver):
            return (f"the NVIDIA driver {gpu['driver']} is older than the {fl.min_driver} branch "
                    f"that {framework}'s cuda image (CUDA {fl.cuda}) needs")
    return None


def arch_problem(framework: str, fl: FlavourSpec, gpus: list[dict]) -> str | None:
    """A GPU whose architecture neither the image's kernels nor its PTX cover."""
    for gpu in gpus:
        cc = _version(gpu.get("compute_capability"))
        if cc is None or len(cc) != 2 or runs_on(fl, cc):
            continue
        kernels = ", ".join(sm(a) for a in fl.cuda_arches)
        if fl.ptx is None:
            ptx = "and no PTX to compile for it"
        else:
            ptx = f"and PTX for {sm(fl.ptx, 'compute')}, which compiles only for that and newer GPUs"
        return (f"GPU {gpu.get('index', '?')} ({gpu.get('name') or 'unknown'}) is {sm(cc)}, and "
                f"{framework}'s cuda image has kernels for {kernels} only {ptx}")
    return None


def runs_on(fl: FlavourSpec, cc: tuple[int, ...]) -> bool:
    """Whether the image has code a GPU of compute capability `cc` can run."""
    for arch in map(version_key, fl.cuda_arches):
        if arch[0] == cc[0] and arch[1] <= cc[1]:
            return True
    return fl.ptx is not None and cc >= version_key(fl.ptx)


def sm(capability: str | tuple[int, ...], prefix: str = "sm") -> str:
    """'9.0' or (9, 0) -> 'sm_90' (kernels), or 'compute_90' (PTX), as nvcc names them."""
    major, minor = version_key(capability) if isinstance(capability, str) else capability
    return f"{prefix}_{major}{minor}"


def _version(value) -> tuple[int, ...] | None:
    """'580.65.06' -> (580, 65, 6); None for a value NVML did not give or that is no version."""
    try:
        return version_key(str(value).strip()) if value not in (None, "") else None
    except ValueError:
        return None
