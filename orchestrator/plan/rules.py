"""What a run would reject, checked at plan time: a value the suite schema admits but the run
would fail on, or silently ignore, is a one-line error here (`dlbench plan` and `dlbench run`
both load suites through orchestrator.plan.suite), naming the field.

Each check takes one run's merged settings and `name`, which turns a field ("resources", "cpus")
into where the user wrote it ("suites/x.yaml: runs[2].resources.cpus", or the suite's
`defaults`). Checks that depend on the machine take a Target; knows nothing of Docker.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

from contract.datasets import DATASETS
from contract.registry import OPTIONS
from orchestrator.errors import DlbenchError

Namer = Callable[..., str]   # name("resources", "cpus") -> "suites/x.yaml: runs[2].resources.cpus"

# A suite of more runs than this is most likely a matrix written wrong (an axis too many):
# `--allow-large` on plan/run confirms it. Beyond the hard limit nothing is expanded at all
# (a hostile matrix of 10^12 combinations must not fill the memory).
MAX_RUNS = 1000
HARD_MAX_RUNS = 100_000
ALLOW_LARGE_FLAG = "--allow-large"
MIN_MEMORY_BYTES = 6 * 2**20          # Docker refuses a smaller memory limit
MAX_MEMORY_BYTES = 2**63 - 1          # the engine's int64
_MEMORY_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_MEMORY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bkmgBKMG]?)")
_CPUSET_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+))?")
MAX_CPU_ID = 2**16 - 1                # Linux builds for at most 8,192 CPUs; this is far beyond
MAX_GPU_INDEX = 1023                  # far beyond any host's GPUs: a typo, not a machine
# A GPU's UUID as NVML, nvidia-smi -L, Docker's device_ids and CUDA_VISIBLE_DEVICES spell it.
GPU_UUID_RE = re.compile(r"GPU-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Target:
    """The machine a plan is checked against: the CPUs a run may use there, and whether the
    plan runs on it. A resource beyond it is an error for a plan that runs there (Docker
    refuses the container) and a warning line for one that runs elsewhere (`dlbench plan
    --other-host`; a cluster backend would pass its nodes' CPUs)."""
    cpus: frozenset[int]
    runs_here: bool = True

    @classmethod
    def this_host(cls, runs_here: bool = True) -> Target:
        try:
            cpus = frozenset(os.sched_getaffinity(0))  # what a container here may be given
        except (AttributeError, OSError):
            cpus = frozenset(range(os.cpu_count() or 1))
        return cls(cpus, runs_here)


def check_run_count(count: int, where: str, allow_large: bool, unit: str = "runs") -> None:
    """Refuse a suite of more runs than MAX_RUNS unless confirmed, and beyond HARD_MAX_RUNS."""
    if count > HARD_MAX_RUNS:
        raise DlbenchError(f"{where}: expands to {count:,} {unit}, more than dlbench runs from one "
                           f"suite ({HARD_MAX_RUNS:,}); split it into several suites")
    if count > MAX_RUNS and not allow_large:
        raise DlbenchError(f"{where}: expands to {count:,} {unit} (more than {MAX_RUNS:,}); "
                           f"check the axes and repeats, or give {ALLOW_LARGE_FLAG} to plan/run "
                           "it as it is")


def check_options(settings: dict, name: Namer) -> None:
    """Every option is one the framework file reads (contract.registry.OPTIONS), of its type."""
    pair = (settings["framework"], settings["api"])
    known = OPTIONS.get(pair, {})
    label = f"{pair[0]}/{pair[1]}"
    for key, value in settings["options"].items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    f"known: {', '.join(sorted(known))}" if known else "it takes no options")
            raise DlbenchError(f"{name('options', key)}: {label} has no option {key!r} "
                               f"({hint}); an option it does not read would be recorded and ignored")
        error = next(iter(jsonschema.Draft202012Validator(known[key]).iter_errors(value)), None)
        if error is not None:
            raise DlbenchError(f"{name('options', key)}: {error.message} ({label})")


def check_device(settings: dict, name: Namer, images: dict) -> None:
    """device: gpu only for a framework with a cuda image (docker/images.yaml); `images` is
    orchestrator.images.load_images()'s result, loaded once by the caller."""
    if settings["device"] != "gpu":
        return
    spec = images.get(settings["framework"])
    if spec is None or "cuda" in spec.flavours:
        return  # no entry at all: preparing the run names it (a test keeps the two in step)
    why = spec.unavailable.get("cuda", "docker/images.yaml lists no cuda flavour")
    if len(why) > 160:  # some reasons are a paragraph: their start, and where the rest is
        why = why[:160].rsplit(" ", 1)[0].rstrip(",;:(") + " ..."
    raise DlbenchError(f"{name('device')}: {settings['framework']} has no cuda image ({why}; "
                       f"docker/images.yaml: images.{settings['framework']}.flavours.cuda); "
                       "run it with device: cpu")


def check_data_sizes(settings: dict, name: Namer) -> list[str]:
    """Limits beyond the split are errors (they would limit nothing); a batch larger than the
    training set is a warning (each epoch is then one batch of all of it)."""
    ds = DATASETS[settings["dataset"]]
    train_split = settings["train_split"]
    sizes = {"train": getattr(ds, train_split), "test": ds.test}
    for split, key in (("train", "train_limit"), ("test", "test_limit")):
        limit, size = settings[key], sizes[split]
        if limit is not None and limit > size:
            which = f"{train_split} split" if split == "train" else "test split"
            raise DlbenchError(f"{name(key)}: {limit:,} is more than the {size:,} samples of "
                               f"{ds.name}'s {which}; leave it out to use them all")
    n_train = min(sizes["train"], settings["train_limit"] or sizes["train"])
    batch = settings["batch_size"]
    if batch > n_train:
        source = "train_limit" if settings["train_limit"] else f"{ds.name}'s {train_split} split"
        return [f"{name('batch_size')}: {batch:,} is more than the {n_train:,} training samples "
                f"({source}): every epoch is a single batch of {n_train:,}"]
    return []


def parse_cpuset(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]; ValueError naming what is wrong."""
    ids: list[int] = []
    for item in text.split(","):
        match = _CPUSET_ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"{item!r} is not a CPU number or range (e.g. 0-3,6)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"the range {item} runs backwards (write {high}-{low})")
        if high > MAX_CPU_ID:
            raise ValueError(f"CPU {high} is beyond any machine's CPUs")
        ids.extend(range(low, high + 1))
    return sorted(set(ids))


def format_cpuset(cpus) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    ordered, parts = sorted(cpus), []
    start = prev = None
    for cpu in [*ordered, None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


def memory_bytes(text: str) -> int:
    """'8g' -> 8 GiB, as Docker reads it (b, k, m, g: powers of 1024); ValueError when not."""
    match = _MEMORY_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512m or 8g")
    return int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "b").lower()])


def check_resources(settings: dict, name: Namer, target: Target) -> list[str]:
    """cpus, cpuset and memory as Docker would take them on the target: what no machine
    takes is an error; what this one lacks is an error when the plan runs here, else a
    warning (returned)."""
    res = settings["resources"]
    cpus, cpuset, memory = res.get("cpus"), res.get("cpuset"), res.get("memory")
    beyond: list[tuple[str, str]] = []      # (resources field, what this machine lacks)
    pinned: list[int] = []
    if cpuset is not None:
        try:
            pinned = parse_cpuset(cpuset)
        except ValueError as exc:
            raise DlbenchError(f"{name('resources', 'cpuset')}: {exc}") from None
        missing = [cpu for cpu in pinned if cpu not in target.cpus]
        if missing:
            beyond.append(("cpuset", f"CPU {missing[0]} is not one this host can give "
                           f"a run (it has {format_cpuset(target.cpus)})"))
    if cpus is not None:
        if not math.isfinite(cpus) or cpus < 0.01:
            raise DlbenchError(f"{name('resources', 'cpus')}: {cpus:g} is less than Docker's smallest "
                               "quota, 0.01")
        if pinned and cpus > len(pinned):
            raise DlbenchError(f"{name('resources', 'cpus')}: {cpus:g} CPUs on a cpuset of "
                               f"{len(pinned)} ({cpuset}) limits nothing; give at most {len(pinned)}")
        if cpus > len(target.cpus):
            beyond.append(("cpus", f"{cpus:g} CPUs is more than the {len(target.cpus)} "
                           "this host can give a run"))
    if memory is not None:
        try:
            size = memory_bytes(memory)
        except ValueError as exc:
            raise DlbenchError(f"{name('resources', 'memory')}: {exc}") from None
        if size == 0:
            raise DlbenchError(f"{name('resources', 'memory')}: {memory!r} would mean no limit to "
                               "Docker; leave memory out (or null) for no limit")
        if size < MIN_MEMORY_BYTES:
            raise DlbenchError(f"{name('resources', 'memory')}: {memory!r} is less than Docker's "
                               "smallest memory limit, 6m")
        if size > MAX_MEMORY_BYTES:
            raise DlbenchError(f"{name('resources', 'memory')}: {memory!r} is more than any engine "
                               "takes; leave memory out for no limit")
    if beyond and target.runs_here:
        field, problem = beyond[0]
        raise DlbenchError(f"{name('resources', field)}: {problem}")
    return [f"{name('resources', field)}: {problem} (fine if the suite runs on a machine that has them)"
            for field, problem in beyond]


def check_gpus(settings: dict, name: Namer) -> None:
    """gpus: NVML indices or GPU UUIDs, each once, and only for a device: gpu run. Whether
    they exist is the backend's preflight (the plan may be for another machine)."""
    gpus = settings.get("gpus")
    if gpus is None:
        return
    if settings["device"] != "gpu":
        raise DlbenchError(f"{name('gpus')}: GPUs given for a device: cpu run; give gpus only "
                           "to device: gpu runs (or leave it out)")
    seen: dict[str, int] = {}
    for position, entry in enumerate(gpus):
        if isinstance(entry, int) and not 0 <= entry <= MAX_GPU_INDEX:
            raise DlbenchError(f"{name('gpus', position)}: {entry} is not a GPU index "
                               f"(0 ... {MAX_GPU_INDEX}, as nvidia-smi numbers them)")
        if isinstance(entry, str) and not GPU_UUID_RE.fullmatch(entry):
            raise DlbenchError(f"{name('gpus', position)}: {entry!r} is neither a GPU index nor a GPU "
                               "UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as nvidia-smi -L prints)")
        key = str(entry).lower()
        if key in seen:
            raise DlbenchError(f"{name('gpus', position)}: {entry!r} is given twice "
                               f"(also gpus[{seen[key]}]); list each GPU once")
        seen[key] = position


def check_parallel(settings: dict, name: Namer, target: Target) -> list[str]:
    """`parallel:` against what the run can have: one CPU (or GPU) per worker on a node,
    a global batch that splits evenly. Errors before anything runs; warning lines for a
    plan that runs elsewhere."""
    parallel = settings.get("parallel")
    if not parallel:
        return []
    workers, nodes = parallel["workers"], parallel["nodes"]
    world = workers * nodes
    if parallel["scaling"] == "strong" and settings["batch_size"] % world:
        raise DlbenchError(f"{name('batch_size')}: strong scaling splits the global batch "
                           f"{settings['batch_size']} over {world} workers unevenly; give a "
                           f"multiple of {world}")
    res = settings["resources"]
    if res.get("cpuset"):
        cores, where = len(parse_cpuset(res["cpuset"])), f"the cpuset {res['cpuset']}"
    elif res.get("cpus"):
        cores, where = int(res["cpus"]), f"cpus: {res['cpus']:g}"
    else:
        cores, where = len(target.cpus), "this host" if nodes == 1 else "this host (a node)"
    if settings["device"] == "gpu":
        gpus = settings.get("gpus")
        if gpus is not None and workers > len(gpus):
            raise DlbenchError(f"{name('parallel', 'workers')}: {workers} workers per node but "
                               f"{len(gpus)} GPU(s) listed in gpus; one worker per GPU")
    elif workers > cores:
        problem = (f"{workers} workers per node but {cores} CPU(s) on {where}: workers would "
                   "share cores; ask for at most that many workers (or more CPUs)")
        if target.runs_here and nodes == 1 and not res.get("cpus"):
            raise DlbenchError(f"{name('parallel', 'workers')}: {problem}")
        if res.get("cpus") or res.get("cpuset"):
            raise DlbenchError(f"{name('parallel', 'workers')}: {problem}")
        return [f"{name('parallel', 'workers')}: {problem} (fine if the nodes have them)"]
    return []
