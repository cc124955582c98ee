"""`dlbench doctor`: can this host run dlbench, and one suite in particular? One line per
check (check, status, detail, what to do), judged against what a suite needs when one is
given, else against "can anything run here at all".

It asks the host once (Host.probe: the engine, NVML's GPUs, uv), then judges; it never
builds, pulls or starts anything. A FAIL line is something that blocks: with a suite, a
run of it; without one, every run. Other problems are `warn`, checks that do not apply
`skip`. Only a suite file that does not load is an error (one line, exit 2).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import DlbenchError
from orchestrator.images import gpu_compat
from orchestrator.images.spec import FlavourSpec, load_images, version_key
from orchestrator.paths import cache_dir, results_root

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
LOW_FREE_BYTES = 10 * 2**30   # a framework image takes 0.3-3.5 GB, a cuda one several more


@dataclass(frozen=True)
class Check:
    name: str
    status: str        # ok | warn | FAIL | skip
    detail: str
    fix: str = ""      # for a line that is not ok: the command (or step) that mends it


@dataclass(frozen=True)
class Needs:
    """What must work here. suite None: no suite given, so nothing in particular."""
    suite: str | None = None
    gpu: dict[str, frozenset[str] | None] = field(default_factory=dict)  # framework -> GPUs picked (None: all)
    images: tuple[tuple[str, str], ...] = ()          # (framework, flavour) the suite's runs use
    datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dataset -> splits read

    @classmethod
    def of_suite(cls, suite) -> Needs:
        gpu: dict[str, frozenset[str] | None] = {}
        data: dict[str, set[str]] = {}
        for run in suite.runs:
            if run.spec["device"] == "gpu":
                picked = None if run.gpus is None else frozenset(str(g).lower() for g in run.gpus)
                before = gpu.get(run.framework, frozenset())
                gpu[run.framework] = None if picked is None or before is None else before | picked
            if not run.synthetic:  # a run always tests on `test` (as the runner mounts it)
                data.setdefault(run.dataset, set()).update({"test", run.spec["dataset"]["train_split"]})
        images = sorted({(run.framework, run.flavour) for run in suite.runs})
        return cls(suite.name, gpu, tuple(images), {k: tuple(sorted(v)) for k, v in data.items()})


@dataclass
class Host:
    """What this machine has, asked once."""
    client: Any = None                 # docker SDK client; None when no engine answers
    engine_problem: str | None = None
    engine_info: dict = field(default_factory=dict)
    gpus: list[dict] = field(default_factory=list)  # system.json's GPU entries (NVML)
    uv: str | None = None              # the local backend's installer
    slurm: str | None = None           # None: no Slurm commands here; "": its controller answers; else why not

    @classmethod
    def probe(cls) -> Host:
        from orchestrator.execution import sysinfo
        from orchestrator.execution.backends.docker import connect
        from orchestrator.execution.backends.local import uv_binary

        client, problem = connect()
        info: dict = {}
        try:
            info = client.info() if client is not None else {}
        except Exception as exc:  # noqa: BLE001 - it answered a ping, then stopped: unreachable
            client, problem = None, f"{_endpoint()}: {type(exc).__name__}: {exc}"
        try:
            uv: str | None = uv_binary()
        except DlbenchError:
            uv = None
        return cls(client, problem, info, sysinfo.gpus(), uv, _slurm_probe())


def run_checks(needs: Needs, host: Host, results: Path | None = None) -> list[Check]:
    rows: list[Check] = []
    for name, check in _CHECKS:
        try:
            rows.extend(check(needs, host, results or results_root()))
        except Exception as exc:  # noqa: BLE001 - one check that cannot run must not hide the others
            rows.append(Check(name, WARN, f"could not check: {type(exc).__name__}: {exc}",
                              "DLBENCH_DEBUG=1 dlbench doctor shows where it failed"))
            if os.environ.get("DLBENCH_DEBUG"):
                raise
    return rows


# -- the engine and the backends ----------------------------------------------------

def _engine(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "Docker engine"
    if host.client is not None:
        info = host.engine_info
        return [Check(name, OK, f"Docker {info.get('ServerVersion', '?')} ({_endpoint()}), "
                                f"storage driver {info.get('Driver', '?')}")]
    fallback = "; runs fall back to the local backend" if host.uv else "; and no local backend either"
    return [Check(name, WARN if host.uv else FAIL, f"unreachable: {host.engine_problem}{fallback}",
                  "start it (sudo systemctl start docker), or set DOCKER_HOST to an engine that runs")]


def _local_backend(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "local backend"
    if host.uv:
        return [Check(name, OK, f"uv at {host.uv}: one virtualenv per framework "
                                "(--backend local, or when Docker is unreachable)")]
    return [Check(name, WARN if host.client else FAIL, "uv not found: no local backend",
                  "make setup (uv is installed with dlbench)")]


def _slurm_probe() -> str | None:
    from orchestrator.execution.backends import slurm_commands

    if slurm_commands.missing_commands():
        return None
    problem = slurm_commands.controller_problem()
    munge = slurm_commands.munge_problem() if problem else None
    return f"munge is not running here ({munge})" if munge else problem or ""


def _slurm(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "Slurm (--backend slurm)"
    if host.slurm is None:
        return [Check(name, SKIP, "no Slurm client commands here (only --backend slurm needs them)")]
    conf = os.environ.get("SLURM_CONF") or "the default slurm.conf"
    if host.slurm == "":
        return [Check(name, OK, f"the controller answers ({conf})")]
    return [Check(name, WARN, host.slurm, "start munged and slurmctld, or set SLURM_CONF to the "
                                          "cluster's slurm.conf (only --backend slurm needs them)")]


def _nvidia_runtime(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "NVIDIA container runtime"
    if host.client is None:
        return [Check(name, SKIP, "no Docker engine to ask")]
    runtimes = sorted(host.engine_info.get("Runtimes") or {})
    listed = f"runtimes: {', '.join(runtimes) or 'none'}; default {host.engine_info.get('DefaultRuntime', '?')}"
    if "nvidia" in runtimes:
        return [Check(name, OK, f"registered in the engine ({listed})")]
    fix = ("install nvidia-container-toolkit, then: sudo nvidia-ctk runtime configure "
           "--runtime=docker && sudo systemctl restart docker")
    if needs.gpu:
        return [Check(name, FAIL, f"not registered in the engine ({listed}): no container gets a GPU", fix)]
    if host.gpus:
        return [Check(name, WARN, f"not registered in the engine ({listed}): containers cannot "
                                  "use this host's GPUs", fix)]
    return [Check(name, SKIP, f"not registered ({listed}), and no NVIDIA GPU here to use")]


# -- the GPUs ----------------------------------------------------------------------------

def _nvidia_driver(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "NVIDIA driver"
    if not host.gpus:
        return [Check(name, FAIL if needs.gpu else SKIP,
                      "no NVIDIA driver answers (NVML): nothing runs on a GPU here",
                      "install the NVIDIA driver, or run a CPU suite: dlbench run suites/quick.yaml")]
    first = host.gpus[0]
    boards = "; ".join(f"GPU {g.get('index', '?')}: {g.get('name') or '?'} "
                       f"({_arch(g) or 'compute capability unknown'})" for g in host.gpus)
    return [Check(name, OK, f"{first.get('driver') or 'version unknown'} (CUDA "
                            f"{first.get('cuda_driver') or '?'}); {boards}")]


def _cuda_targets(needs: Needs, host: Host) -> dict[str, tuple[FlavourSpec, list[dict]]]:
    """framework -> (its cuda flavour, the GPUs its runs see): the suite's GPU runs, or
    without a suite every cuda image on every GPU."""
    images = load_images(check_locks=False)
    wanted: dict[str, frozenset[str] | None] = needs.gpu if needs.suite else dict.fromkeys(images)
    targets = {}
    for framework, picked in sorted(wanted.items()):
        spec = images.get(framework)
        if spec is not None and "cuda" in spec.flavours:
            gpus = [g for g in host.gpus if picked is None
                    or {str(g.get("index")), str(g.get("uuid")).lower()} & picked]
            targets[framework] = (spec.flavours["cuda"], gpus)
    return targets


def _driver_vs_images(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "driver vs cuda images"
    targets = _cuda_targets(needs, host)
    driver = next((g["driver"] for g in host.gpus if g.get("driver")), None)
    if not targets or not host.gpus or driver is None:
        return [Check(name, SKIP, "the suite runs nothing on a GPU" if not targets
                      else "no driver version to compare")]
    late = {fw: fl for fw, (fl, gpus) in targets.items() if gpu_compat.driver_problem(fw, fl, gpus)}
    if not late:
        minimums = ", ".join(f"{fw} {fl.min_driver}" for fw, (fl, _) in targets.items())
        return [Check(name, OK, f"{driver} meets every image's minimum branch ({minimums})")]
    newest = max((fl.min_driver or "0" for fl in late.values()), key=version_key)
    return [Check(name, FAIL if needs.suite else WARN,
                  f"{driver} is older than what " + ", ".join(f"{fw} ({fl.min_driver})" for fw, fl in late.items())
                  + " need; the NVIDIA container toolkit refuses those images",
                  f"update the NVIDIA driver to the {newest} branch or newer")]


def _arch_vs_images(needs: Needs, host: Host, _results: Path) -> list[Check]:
    name = "GPU architecture vs cuda images"
    targets = _cuda_targets(needs, host)
    known = [g for g in host.gpus if _arch(g)]
    if not targets or not known:
        return [Check(name, SKIP, "the suite runs nothing on a GPU" if not targets
                      else "no GPU compute capability to compare")]
    problems = {fw: p for fw, (fl, gpus) in targets.items() if (p := gpu_compat.arch_problem(fw, fl, gpus))}
    arches = ", ".join(sorted({_arch(g) or "" for g in known}))
    if not problems:
        return [Check(name, OK, f"{arches}: every image has kernels or PTX for it "
                                f"({', '.join(targets)})")]
    names = " and ".join(problems)
    return [Check(name, FAIL if needs.suite else WARN, "; ".join(problems.values()),
                  f"run {names} on a GPU its kernels cover (docker/images.yaml cuda_arches), or "
                  "leave it out of GPU suites here (its runs are recorded `unavailable`)")]


def _arch(gpu: dict) -> str | None:
    value = gpu.get("compute_capability")
    try:
        return gpu_compat.sm(str(value)) if value else None
    except ValueError:
        return None


# -- data, disk, images -----------------------------------------------------------------

def _datasets(needs: Needs, host: Host, _results: Path) -> list[Check]:
    from orchestrator import datasets
    from orchestrator.datasets import provenance

    if needs.suite is None:
        rows = datasets.status()
        ready = [f"{name} ({'+'.join(splits)})" for name, loc, splits in rows if loc]
        missing = [name for name, loc, _ in rows if loc is None]
        detail = f"ready: {', '.join(ready) or 'none'}; not prepared: {', '.join(missing) or 'none'}"
        return [Check("datasets", OK if ready else WARN, detail,
                      "dlbench data fetch fashion-mnist (what suites/quick.yaml reads)")]
    if not needs.datasets:
        return [Check("datasets", SKIP, "the suite's runs generate their data (synthetic)")]
    checks = []
    for name, splits in sorted(needs.datasets.items()):
        try:
            found = provenance.require_verified(name, splits)
        except DlbenchError as exc:
            present = datasets.locate(name, splits)
            fix = (f"dlbench data verify {name}" if present and present.has(splits)
                   else f"dlbench data fetch {name}")
            checks.append(Check(f"dataset {name}", FAIL, str(exc), fix))
            continue
        checks.append(Check(f"dataset {name}", OK, f"{'+'.join(splits)} in {found.directory} "
                                                   f"[{found.source}], checksums match"))
    return checks


def _disk(needs: Needs, host: Host, results: Path) -> list[Check]:
    from orchestrator.results.directory import MIN_FREE_BYTES

    places = {"results": results, "dlbench cache": cache_dir()}
    root = host.engine_info.get("DockerRootDir")
    if host.client is not None and root and _engine_is_local():
        places["Docker's images"] = Path(root)
    free: dict[int, int] = {}                 # filesystem -> bytes free
    users: dict[int, list[str]] = {}          # filesystem -> what lives there
    for label, path in places.items():
        existing = _existing(path)
        try:
            device = os.stat(existing).st_dev
            free[device] = shutil.disk_usage(existing).free
        except OSError:
            continue
        users.setdefault(device, []).append(f"{label} ({path})")
    detail = "; ".join(f"{free[d] / 2**30:.1f} GiB free for {', '.join(users[d])}" for d in free)
    fix = "free some space, or point DLBENCH_RESULTS / DLBENCH_CACHE at a larger filesystem"
    results_device = next((d for d in users if users[d][0].startswith("results (")), None)
    if results_device is not None and free[results_device] < MIN_FREE_BYTES:
        return [Check("free disk", FAIL, f"{detail}: too little for results", fix)]
    if any(value < LOW_FREE_BYTES for value in free.values()):
        return [Check("free disk", WARN, f"{detail} (under {LOW_FREE_BYTES // 2**30} GiB somewhere)", fix)]
    return [Check("free disk", OK, detail or "nothing measurable")]


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _engine_is_local() -> bool:
    """Only a local engine's DockerRootDir is a directory of this host."""
    return _endpoint().startswith("unix://")


def _base_image(needs: Needs, host: Host, _results: Path) -> list[Check]:
    import docker.errors

    from orchestrator.images.base import remembered_bases
    from orchestrator.images.options import BuildOptions

    name = "base image"
    if host.client is None:
        return [Check(name, SKIP, "no Docker engine to ask")]
    try:
        options = BuildOptions.from_env(host_pip=False)
    except DlbenchError as exc:  # a build would stop on it
        return [Check(name, FAIL if needs.suite else WARN, str(exc), "fix or unset that variable")]
    images = load_images(check_locks=False)
    base = options.base_image or next(fl.base for spec in images.values() for fl in spec.flavours.values())
    source = "DLBENCH_BASE_IMAGE" if options.base_image else "docker/images.yaml"
    try:
        host.client.images.get(base)
        return [Check(name, OK, f"{base} ({source}) is present locally")]
    except docker.errors.ImageNotFound:
        pass
    remembered = remembered_bases().get(base)
    if remembered and not options.base_image:  # made here earlier, when the pull failed
        return [Check(name, OK, f"{base} could not be pulled here; builds use the local base "
                                f"{remembered['tag']} made from Debian packages (remembered)")]
    fix = ("none needed where a registry is reachable; else the first build makes a local base "
           "with mmdebstrap (apt-get install mmdebstrap), or `dlbench images base` now")
    return [Check(name, WARN, f"{base} ({source}) is not present locally: a build pulls it, which "
                              "needs registry access", fix)]


def _images(needs: Needs, host: Host, _results: Path) -> list[Check]:
    from orchestrator.images.build import image_status
    from orchestrator.images.options import BuildOptions

    name = "framework images"
    if host.client is None:
        return [Check(name, SKIP, "no Docker engine to ask")]
    wanted = needs.images or tuple((fw, fl) for fw, spec in sorted(load_images(check_locks=False).items())
                                   for fl in spec.flavours if fl == "cpu" or host.gpus)
    options = BuildOptions.from_env(host_pip=False)
    states: dict[str, list[str]] = {}
    for framework, flavour in wanted:
        try:
            state = image_status(host.client, framework, flavour, options)
        except DlbenchError as exc:
            state = f"not buildable ({exc})"
        states.setdefault(state, []).append(f"{framework}/{flavour}")
    current = states.pop("current", [])
    if not states:
        return [Check(name, OK, f"{len(current)} current: {', '.join(current)}")]
    detail = "; ".join(f"{state}: {', '.join(names)}" for state, names in states.items())
    return [Check(name, WARN, f"{len(current)} current; {detail} (`dlbench run` builds them first)",
                  _build_command([n for names in states.values() for n in names]))]


def _build_command(images: list[str]) -> str:
    """['pytorch/cpu', 'jax/cuda'] -> the `dlbench images build` lines that build them."""
    by_flavour: dict[str, list[str]] = {}
    for image in images:
        framework, flavour = image.split("/")
        by_flavour.setdefault(flavour, []).append(framework)
    return "; ".join(f"dlbench images build {' '.join(fws)}" + ("" if fl == "cpu" else f" --flavour {fl}")
                     for fl, fws in sorted(by_flavour.items()))


_CHECKS: tuple[tuple[str, Callable[[Needs, Host, Path], list[Check]]], ...] = (
    ("Docker engine", _engine), ("local backend", _local_backend), ("Slurm", _slurm),
    ("NVIDIA container runtime", _nvidia_runtime), ("NVIDIA driver", _nvidia_driver),
    ("driver vs cuda images", _driver_vs_images), ("GPU architecture vs cuda images", _arch_vs_images),
    ("datasets", _datasets), ("free disk", _disk), ("base image", _base_image),
    ("framework images", _images),
)
