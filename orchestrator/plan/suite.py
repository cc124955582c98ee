"""Suite YAML -> validated plan of runs (one RunSpec each), printable before anything runs."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from contract.datasets import DATASETS, model_fits
from contract.models import MODELS
from contract.registry import IMPLEMENTATIONS
from contract.schemas import load_schema
from orchestrator.errors import DlbenchError
from orchestrator.paths import ORCHESTRATOR_SCHEMA_DIR
from orchestrator.plan import matrix as matrix_mod
from orchestrator.plan import rules
from orchestrator.plan.rules import Target
from orchestrator.plan.yamlfile import field_path, json_value_problem, read_suite_file

SPEC_SCHEMA_VERSION = 1
# A suite's name names its results directory (<timestamp>-<name>): one safe path component.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_CV_THRESHOLD = 0.10   # a suite's `cv_threshold` unless it says otherwise (pyperf warns above 10 %)

# What a run gets when neither the run nor the suite's defaults say otherwise.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "workload": "mnist_cnn",
    "dataset": "fashion-mnist",
    "synthetic": False,           # true: seeded generated data of the dataset's shapes
    "train_split": "train",
    "train_limit": None,
    "test_limit": None,
    "epochs": 1,
    "batch_size": 128,
    "learning_rate": 0.001,
    "optimizer": "adam",
    "seed": 42,
    "device": "cpu",
    "precision": "fp32",
    "warmup_steps": 3,
    "window_steps": 20,           # steady-state windows (workloads/harness.py StepWindows)
    "eval_every_epoch": True,
    "repeats": 1,
    "timeout": 3600,
    "monitor_interval": 0.5,      # seconds between resource samples (orchestrator.monitor)
    "threads": {"intra_op": None, "inter_op": None},
    "resources": {"cpus": None, "cpuset": None, "memory": None},
    "gpus": None,                 # NVML indices or GPU UUIDs of a gpu run; None: every GPU
    "options": {},
    "dropout": True,              # false: dropout rates 0 (the parallel correctness check)
    "parallel": None,             # data-parallel: {workers, nodes, scaling, learning_rate_rule}
}
# What a `parallel:` block gets for the keys it leaves out.
PARALLEL_DEFAULTS = {"workers": 1, "nodes": 1, "scaling": "weak", "learning_rate_rule": "none"}


@dataclass
class PlannedRun:
    """One container (or local process) to start: the spec plus how to run it."""
    run_id: str
    framework: str
    api: str
    flavour: str                  # image flavour: cpu or cuda
    dataset: str
    timeout: float
    resources: dict
    spec: dict = field(repr=False)  # spec.json minus dataset.path, which the backend sets
    monitor_interval: float = BUILTIN_DEFAULTS["monitor_interval"]
    gpus: list[int | str] | None = None  # None: every GPU (plans made before `gpus` have none)

    @property
    def parallel(self) -> dict | None:
        """The spec's data-parallel block (workers_per_node, nodes, ...), None for one process."""
        return self.spec.get("parallel")

    @property
    def nodes(self) -> int:
        return self.parallel["nodes"] if self.parallel else 1

    @property
    def workers_per_node(self) -> int:
        return self.parallel["workers_per_node"] if self.parallel else 1

    @property
    def synthetic(self) -> bool:
        """Generated data: the workload needs no dataset directory."""
        return bool(self.spec["dataset"].get("synthetic"))

    def spec_for(self, dataset_path: str | None) -> dict:
        spec = json.loads(json.dumps(self.spec))
        spec["dataset"]["path"] = None if self.synthetic else dataset_path
        return spec

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "framework": self.framework, "api": self.api,
                "flavour": self.flavour, "dataset": self.dataset, "timeout": self.timeout,
                "resources": self.resources, "gpus": self.gpus,
                "monitor_interval": self.monitor_interval, "spec": self.spec}


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    text: str                     # the file as given, kept verbatim for the results
    runs: list[PlannedRun]
    cv_threshold: float = DEFAULT_CV_THRESHOLD   # warn above this repeat-to-repeat CV
    matrix_description: str | None = None
    warnings: list[str] = field(default_factory=list)  # lines to show before anything runs
    slurm: dict | None = None     # the suite's `slurm:` block, for --backend slurm

    @property
    def devices(self) -> set[str]:
        return {run.spec["device"] for run in self.runs}

    def synthetic_only(self) -> Suite:
        """The suite's runs on synthetic data alone (`--synthetic-only`: a machine without
        the dataset can still run the speed half of an input-bound suite)."""
        runs = [run for run in self.runs if run.synthetic]
        if not runs:
            raise DlbenchError(f"{self.path}: --synthetic-only: no run of this suite uses "
                               "synthetic data (give it `synthetic: true` or a `synthetic: "
                               "[false, true]` matrix axis)")
        return Suite(self.name, self.description, self.path, self.text, runs,
                     self.cv_threshold, self.matrix_description, self.warnings, self.slurm)


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# JSON Schema counts 2.0 as an integer; Python's range() and every framework do not, so
# `repeats: 2.0` or `batch_size: 64.0` would pass the plan and fail (or crash it) later.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


def _schema() -> dict:
    with open(ORCHESTRATOR_SCHEMA_DIR / "suite.schema.json", encoding="utf-8") as fh:
        return json.load(fh)


def _explain(error: jsonschema.ValidationError, schema: dict) -> str:
    """A schema error as one line naming the field, with 'did you mean' for typos."""
    where = field_path(error.absolute_path)
    if error.validator == "additionalProperties":
        node = error.schema if isinstance(error.schema, dict) else {}
        allowed = sorted(node.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]  # type: ignore[union-attr]  # the object validated
        key = extras[0] if extras else "?"
        where = field_path([*error.absolute_path, key])
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
        return f"{where}: unknown key ({hint})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _check_names(settings: dict, where: str) -> None:
    pair = (settings["framework"], settings["api"])
    if pair not in IMPLEMENTATIONS:
        frameworks = sorted({f for f, _ in IMPLEMENTATIONS})
        if pair[0] not in frameworks:
            close = difflib.get_close_matches(pair[0], frameworks, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(frameworks)}"
            raise DlbenchError(f"{where}.framework: unknown framework '{pair[0]}' ({hint})")
        apis = sorted(a for f, a in IMPLEMENTATIONS if f == pair[0])
        raise DlbenchError(f"{where}.api: {pair[0]} has no API '{pair[1]}' (known: {', '.join(apis)})")
    if settings["workload"] not in MODELS:
        raise DlbenchError(f"{where}.workload: unknown workload '{settings['workload']}' "
                           f"(known: {', '.join(sorted(MODELS))})")
    dataset = DATASETS.get(settings["dataset"])
    if dataset is None:
        raise DlbenchError(f"{where}.dataset: unknown dataset '{settings['dataset']}' "
                           f"(known: {', '.join(sorted(DATASETS))})")
    unfit = model_fits(MODELS[settings["workload"]], dataset)
    if unfit:
        raise DlbenchError(f"{where}.dataset: {unfit}")


def load_suite(path: str | Path, *, target: Target | None = None,
               allow_large: bool = False) -> Suite:
    """Read, validate and expand a suite file; every problem is a one-line DlbenchError
    naming the file and field. `target`: the machine the runs are for (default: this
    host, where a resource it lacks is an error); `allow_large`: plan more than
    rules.MAX_RUNS runs (`--allow-large`)."""
    path = Path(path)
    text, data = read_suite_file(path)
    if not isinstance(data, dict):
        raise DlbenchError(f"{path}: a suite must be a mapping with 'name' and 'runs'")
    problem = json_value_problem(data)
    if problem:
        raise DlbenchError(f"{path}: {problem}")
    if isinstance(data.get("name"), str) and not NAME_RE.fullmatch(data["name"]):
        raise DlbenchError(f"{path}: name: {data['name']!r} is not one safe file name: up to 64 "
                           "letters, digits, '_', '.' and '-', starting with a letter or digit")
    schema = _schema()
    errors = sorted(_Validator(schema).iter_errors(data),
                    key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        raise DlbenchError(f"{path}: {_explain(errors[0], schema)}")
    if "runs" not in data and "matrix" not in data:
        raise DlbenchError(f"{path}: a suite needs 'runs', a 'matrix', or both")
    expansion = None
    if "matrix" in data:
        expansion = matrix_mod.expand(data["matrix"], f"{path}: matrix")
    runs, warnings = _expand(data, path, expansion, target or Target.this_host(), allow_large)
    return Suite(name=data["name"], description=data.get("description", ""), path=path,
                 text=text, runs=runs,
                 cv_threshold=data.get("statistics", {}).get("cv_threshold",
                                                             DEFAULT_CV_THRESHOLD),
                 matrix_description=expansion.description if expansion else None,
                 warnings=warnings, slurm=data.get("slurm"))


def _namer(path: Path, where: str, entry: dict, defaults: dict):
    """name(*field) -> where the user gave that field: the run entry (or matrix combination),
    else the suite's defaults, else the entry (a built-in default)."""
    def given(node, parts) -> bool:
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def name(*parts) -> str:
        if not given(entry, parts[:1]) and given(defaults, parts[:1]):
            return f"{path}: {field_path(['defaults', *parts])}"
        return f"{where}.{field_path(parts)}"
    return name


def _expand(data: dict, path: Path, expansion: matrix_mod.Expansion | None, target: Target,
            allow_large: bool) -> tuple[list[PlannedRun], list[str]]:
    """(runs, warning lines): explicit `runs` first, then the matrix's combinations;
    `repeats` multiplies each."""
    given_defaults = data.get("defaults", {})
    defaults = _merge(BUILTIN_DEFAULTS, given_defaults)
    entries = [(run, f"{path}: runs[{i}]", "") for i, run in enumerate(data.get("runs", []))]
    if expansion:
        entries += [(combo, f"{path}: matrix combination "
                            f"({', '.join(f'{k}={v}' for k, v in point.items())})", label)
                    for combo, point, label in zip(expansion.combinations, expansion.points,
                                                   expansion.labels)]
    # counted before each run is checked: a huge suite is refused before any work on it
    rules.check_run_count(sum(run.get("repeats", defaults["repeats"]) for run, _, _ in entries),
                          str(path), allow_large)
    checked: list[tuple[dict, str, str]] = []
    warnings: list[str] = []
    images: dict | None = None
    for run, where, label in entries:
        settings = _merge(defaults, run)
        if settings.get("parallel") is not None:
            settings["parallel"] = {**PARALLEL_DEFAULTS, **settings["parallel"]}
        if "framework" in settings and "api" not in settings and \
                settings["framework"] not in {f for f, _ in IMPLEMENTATIONS}:
            _check_names({"api": "", **settings}, where)  # an unknown framework is the real problem
        missing = [key for key in ("framework", "api") if key not in settings]
        if missing:
            raise DlbenchError(f"{where}: no {' or '.join(missing)} (give it in the matrix, "
                               "the entry or defaults, e.g. framework: pytorch/eager)")
        _check_names(settings, where)
        if settings["device"] == "gpu" and images is None:
            from orchestrator.images import load_images  # only a GPU suite needs images.yaml

            images = load_images(check_locks=False)
        warnings += _check_run(settings, _namer(path, where, run, given_defaults), target,
                               images or {})
        checked.append((settings, where, label))
    return _planned_runs(checked, path), list(dict.fromkeys(warnings))


def _check_run(settings: dict, name, target: Target, images: dict) -> list[str]:
    """What the run itself would reject (orchestrator.plan.rules), as errors; warning lines."""
    rules.check_options(settings, name)
    rules.check_device(settings, name, images)
    rules.check_gpus(settings, name)
    return [*rules.check_data_sizes(settings, name), *rules.check_resources(settings, name, target),
            *rules.check_parallel(settings, name, target)]


def _planned_runs(checked: list[tuple[dict, str, str]], path: Path) -> list[PlannedRun]:
    """One PlannedRun per repeat of each checked entry; an entry identical to an earlier one
    (all a run is, less its id and repeat) is an error: that is what `repeats` is for."""
    planned: list[PlannedRun] = []
    seen: set[str] = set()
    experiments: dict[str, str] = {}      # the run's settings as JSON -> where they were first
    spec_validator = jsonschema.Draft202012Validator(load_schema("spec"))
    for index, (settings, where, label) in enumerate(checked, start=1):
        experiment = json.dumps([_spec("", settings, 0), settings["resources"], settings["gpus"],
                                 settings["timeout"], settings["monitor_interval"]], sort_keys=True)
        if experiment in experiments:
            raise DlbenchError(f"{where}: the same run as {experiments[experiment]} (identical "
                               "settings); use repeats: N to run one more than once")
        experiments[experiment] = where.removeprefix(f"{path}: ")
        for repeat in range(settings["repeats"]):
            run_id = f"{index:02d}-{settings['framework']}-{settings['api']}"
            if label:
                run_id += f"-{label}"
            if settings["repeats"] > 1:
                run_id += f"-r{repeat + 1}"
            if run_id in seen:  # defensive: ids name directories and containers
                raise DlbenchError(f"{where}: duplicate run id {run_id}")
            seen.add(run_id)
            spec = _spec(run_id, settings, repeat)
            if repeat == settings["repeats"] - 1:  # the longest id: the workload checks it so
                error = next(iter(spec_validator.iter_errors(spec)), None)
                if error is not None:
                    raise DlbenchError(f"{where}: the run spec would not validate: "
                                       f"{field_path(error.absolute_path)}: {error.message}")
            planned.append(PlannedRun(
                run_id=run_id, framework=settings["framework"], api=settings["api"],
                flavour="cuda" if settings["device"] == "gpu" else "cpu",
                dataset=settings["dataset"], timeout=float(settings["timeout"]),
                resources=settings["resources"], spec=spec,
                monitor_interval=float(settings["monitor_interval"]), gpus=settings["gpus"]))
    return planned


def _spec(run_id: str, s: dict, repeat: int) -> dict:
    return {
        "schema_version": SPEC_SCHEMA_VERSION,
        "run_id": run_id,
        "framework": s["framework"], "api": s["api"], "workload": s["workload"],
        "dataset": {"name": s["dataset"], "path": None, "synthetic": s["synthetic"],
                    "train_split": s["train_split"],
                    "train_limit": s["train_limit"], "test_limit": s["test_limit"]},
        "batch_size": s["batch_size"], "epochs": s["epochs"],
        "learning_rate": s["learning_rate"], "optimizer": s["optimizer"],
        "seed": s["seed"], "device": s["device"], "precision": s["precision"],
        "threads": s["threads"], "warmup_steps": s["warmup_steps"], "window_steps": s["window_steps"],
        "eval_every_epoch": s["eval_every_epoch"], "options": s["options"],
        "repeat": repeat,
        # only where the suite says so: the specs of every earlier suite stay as they were
        **({"dropout": False} if not s["dropout"] else {}),
        **({"parallel": {"workers_per_node": s["parallel"]["workers"], "nodes": s["parallel"]["nodes"],
                         "scaling": s["parallel"]["scaling"],
                         "learning_rate_rule": s["parallel"]["learning_rate_rule"]}}
           if s["parallel"] else {}),
    }


def format_plan(suite: Suite) -> str:
    """The dry-run table `dlbench plan` prints."""
    header = ("run", "framework/api", "flavour", "workload", "dataset", "epochs", "batch", "lr",
              "repeat", "resources", "options")
    rows = [header]
    for run in suite.runs:
        s = run.spec
        res = ", ".join([*(f"{k}={v}" for k, v in run.resources.items() if v is not None),
                         *([f"gpus={','.join(map(str, run.gpus))}"] if run.gpus else []),
                         *([f"workers={run.workers_per_node}x{run.nodes}node(s)"
                            f" {run.parallel['scaling']}"] if run.parallel else [])]) or "-"
        split = "" if s["dataset"]["train_split"] == "train" else " (train on test split)"
        split += " (synthetic)" if s["dataset"]["synthetic"] else ""
        limit = f"[:{s['dataset']['train_limit']}]" if s["dataset"]["train_limit"] else ""
        rows.append((run.run_id, f"{run.framework}/{run.api}", run.flavour, s["workload"],
                     f"{run.dataset}{limit}{split}", str(s["epochs"]), str(s["batch_size"]),
                     f"{s['learning_rate']:g}", str(s["repeat"] + 1), res,
                     ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(s["options"].items())) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"suite {suite.name}: {len(suite.runs)} run(s)" +
             (f" - {suite.description}" if suite.description else "")]
    if suite.matrix_description:
        lines.append(f"{suite.matrix_description}, {len(suite.runs)} run(s) with repeats")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
