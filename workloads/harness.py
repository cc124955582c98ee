"""The shared harness: everything about a run that is not the framework.

Spec in -> thread and precision env -> import the framework file (timed) -> data in memory
as numpy -> build model -> first step and warm-up over every batch shape the timed region
will see (timed apart) -> timed epochs, with steady-state windows of K steps inside them ->
evaluation -> metrics.json written atomically. Framework files only subclass
`Implementation` with the model, its training/eval step and the precision policy.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import resource
import signal
import socket
import time
import traceback
from dataclasses import dataclass, replace

import numpy as np

from contract.datasets import model_fits
from contract.events import format_event
from contract.hostinfo import cpu_model_name
from contract.jsonio import write_json_atomic
from contract.models import ADAM, MODELS, ConvNetSpec, RecurrentSpec
from contract.ranks import merge as merge_ranks
from contract.ranks import rank_file
from contract.registry import IMPLEMENTATIONS, IMPORT_ENVIRONMENT, PARALLEL, parallel_problem, precision_problem
from contract.schemas import METRICS_SCHEMA_VERSION, load_schema

from . import data as data_mod
from . import parallel as parallel_mod
from .loc import logical_lines_of_implementation, logical_lines_of_workload
from .parallel import World

SCHEMA_VERSION = 1          # spec.json

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_OOM, EXIT_UNSUPPORTED = 0, 1, 2, 3, 4

# Library-wide switch of cuBLAS/cuDNN: 0 forbids TF32 whatever a framework's own flag says,
# so `fp32` means FP32 in every framework (each file also sets its own switch, recorded).
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"


class SpecError(Exception):
    """The run spec is unusable; the message names the field."""


class Unsupported(Exception):
    """The framework cannot do what the spec asks (a precision policy on this device, ...):
    the run's status is `unsupported` with this reason, never a silent substitute."""


class StepWindows:
    """Steady-state throughput: wall time of each window of `steps` training steps inside the
    timed epochs. Own training loops iterate `Implementation.train_batches`, which calls
    `step_done()` after dispatching each step; loops inside the framework (Keras' fit, the
    Estimator) call it from a callback or hook once the step's results exist (sync=False).
    The device is synchronised at window edges only; a partial last window is dropped."""

    def __init__(self, steps: int, synchronize):
        self.steps, self.synchronize = steps, synchronize
        self.active = False
        self.window_s: list[float] = []
        self._count, self._start = 0, 0.0
        self.steps_total = 0  # training steps inside the timed epochs

    def begin(self) -> None:
        self._count, self._start, self.active = 0, time.perf_counter(), True

    def end(self) -> None:
        self.active = False

    def step_done(self, sync: bool = True) -> None:
        if not self.active:  # warm-up, evaluation, the equivalence check's probes
            return
        self._count += 1
        self.steps_total += 1
        if self._count == self.steps:
            if sync:
                self.synchronize()
            now = time.perf_counter()
            self.window_s.append(now - self._start)
            self._count, self._start = 0, now


class Implementation:
    """Base class of every framework file. Subclasses set the class attributes and
    implement build / train_epoch / evaluate; the rest has working defaults."""

    framework = ""
    api = ""
    data_layout = "NHWC"  # the layout the framework wants its batches in
    optimizers: tuple[str, ...] = ("adam",)  # spec `optimizer` values the file implements
    world = World()       # this worker (workloads/parallel.py); set by the harness before configure

    def __init__(self, spec: dict):
        self.spec = spec
        self.gpu = spec["device"] == "gpu"
        self.precision = spec.get("precision", "fp32")  # contract.registry.PRECISION_POLICIES
        self.model_spec = MODELS[spec["workload"]]  # what build() will be given
        self.step_windows = StepWindows(spec.get("window_steps", 20), self.synchronize)

    # -- to implement -------------------------------------------------------
    def version(self) -> str:
        raise NotImplementedError

    def configure(self) -> dict:
        """Seed, threads, device and the precision policy (self.precision; raise Unsupported
        when it cannot be done here); return the framework options in force."""
        raise NotImplementedError

    def build(self, model) -> int:
        """Build model + optimizer for a `models.ConvNetSpec` or `models.RecurrentSpec`;
        return the number of trainable parameters."""
        raise NotImplementedError

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
        """One pass over (x, y) in the given order; return (mean loss, accuracy)."""
        raise NotImplementedError

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
        raise NotImplementedError

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode forward pass of one batch (no dropout, no update) as a float
        numpy array (batch, classes): the equivalence check reads shape and initial loss."""
        raise NotImplementedError

    def train_batches(self, n: int, batch_size: int):
        """`batches()` for a training loop: counts steps into the steady-state windows."""
        for s in batches(n, batch_size):
            yield s
            self.step_windows.step_done()

    # -- optional -----------------------------------------------------------
    def precision_settings(self) -> dict:
        """After build: the settings in force as the framework reports them (TF32 flags,
        compute/variable dtypes, matmul precision, loss scaling, jit_compile)."""
        return {}

    def gpu_libraries(self) -> dict:
        """The CUDA / cuDNN versions the framework loaded (GPU runs), as it reports them."""
        return {}

    # what peak_device_memory_mb measures (allocator peak, reserved, ...), said in the metrics
    device_memory_kind = ""

    def synchronize(self) -> None:
        """Block until queued device work is done (GPU timings must call this)."""

    def barrier(self) -> None:
        """Parallel runs: block until every rank gets here (the framework's own collective)."""

    def communication(self) -> dict:
        """Parallel runs: time in gradient communication over the timed epochs, where the
        framework exposes it: {"time_s": float | None, "source": what measured it or why not}."""
        return {"time_s": None, "source": f"not exposed by {self.framework}"}

    def device_name(self) -> str:
        return cpu_model_name()

    def peak_device_memory_mb(self) -> float | None:
        return None

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return is_out_of_memory_text(exc)


# How frameworks word a device allocation failure: CUDA, cuBLAS/cuDNN, XLA/JAX, TensorFlow,
# MXNet and Paddle (file-specific exception types are checked in the framework files).
OOM_MARKERS = ("out of memory", "resourceexhausted", "resource_exhausted", "resource exhausted",
               "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "cudaerrormemoryallocation",
               "failed to allocate", "out_of_memory", "outofmemory", "cuda_error_out_of_memory")


def is_out_of_memory_text(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in OOM_MARKERS)


def batches(n: int, batch_size: int):
    """Slices covering range(n) in order; the last batch may be smaller."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


_QUIET = {"events": False}  # ranks other than 0 of a parallel run: rank 0 speaks for the run


def emit(event: str, **fields) -> None:
    """One progress line on stdout for the orchestrator (and humans) to follow."""
    if not _QUIET["events"]:
        print(format_event(event, **fields), flush=True)


def validate_spec(spec: dict) -> dict:
    """Validate against spec.schema.json and fill defaults; SpecError names the field."""
    import jsonschema  # in every image's lock; kept local so `import workloads` stays light

    errors = sorted(jsonschema.Draft202012Validator(load_schema("spec")).iter_errors(spec),
                    key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise SpecError(f"spec field {where}: {err.message}")
    if (spec["framework"], spec["api"]) not in IMPLEMENTATIONS:
        known = ", ".join(f"{f}/{a}" for f, a in sorted(IMPLEMENTATIONS))
        raise SpecError(f"spec field framework/api: no implementation of "
                        f"{spec['framework']}/{spec['api']} (known: {known})")
    if spec["workload"] not in MODELS:
        raise SpecError(f"spec field workload: unknown workload {spec['workload']!r} "
                        f"(known: {', '.join(sorted(MODELS))})")
    try:
        dataset = data_mod.info(spec["dataset"]["name"])
    except data_mod.DataError as exc:
        raise SpecError(f"spec field dataset.name: {exc}") from None
    unfit = model_fits(MODELS[spec["workload"]], dataset)
    if unfit:
        raise SpecError(f"spec field workload: {unfit}")
    if not spec["dataset"].get("synthetic") and not spec["dataset"].get("path"):
        raise SpecError("spec field dataset.path: needed unless dataset.synthetic is true")
    full = dict(spec)
    full["dataset"] = {"train_split": "train", "train_limit": None, "test_limit": None,
                       "synthetic": False, "path": None, **spec["dataset"]}
    full.setdefault("precision", "fp32")
    full.setdefault("window_steps", 20)
    full["threads"] = {"intra_op": None, "inter_op": None, **spec.get("threads", {})}
    full.setdefault("warmup_steps", 3)
    full.setdefault("eval_every_epoch", True)
    full.setdefault("options", {})
    full.setdefault("repeat", 0)
    full.setdefault("dropout", True)
    if full.get("parallel") is not None:
        full["parallel"] = {"scaling": "weak", "learning_rate_rule": "none", **full["parallel"]}
        if full["parallel"]["scaling"] == "strong" and full["batch_size"] % world_size(full):
            raise SpecError(f"spec field batch_size: strong scaling splits {full['batch_size']} "
                            f"over {world_size(full)} workers unevenly; give a multiple of it")
    return full


def world_size(spec: dict) -> int:
    parallel = spec.get("parallel")
    return parallel["workers_per_node"] * parallel["nodes"] if parallel else 1


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Every batch size `batches(n, batch_size)` yields: the full one and the tail."""
    sizes = {batch_size} if n >= batch_size else set()
    return sorted(sizes | {n % batch_size} if n % batch_size else sizes)


def apply_precision_env(precision: str) -> dict:
    """Environment the precision policy needs before the framework loads its CUDA libraries."""
    if precision == "fp32":
        os.environ[TF32_OVERRIDE] = "0"
    else:  # the framework's own switch decides (a value inherited from elsewhere would not)
        os.environ.pop(TF32_OVERRIDE, None)
    return {TF32_OVERRIDE: os.environ.get(TF32_OVERRIDE)}


def apply_thread_env(threads: dict) -> None:
    """Thread settings must be in the environment before the framework is imported."""
    intra = threads.get("intra_op")
    if intra:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(intra)
    inter = threads.get("inter_op")
    if inter:  # MXNet sizes its engine's worker pool at import
        os.environ["MXNET_CPU_WORKER_NTHREADS"] = str(inter)


@dataclass
class Clock:
    """Wall-clock intervals that first wait for the device to finish its queued work."""
    impl: Implementation | None = None

    def time(self, fn, *args):
        if self.impl is not None:
            self.impl.synchronize()
        start = time.perf_counter()
        result = fn(*args)
        if self.impl is not None:
            self.impl.synchronize()
        return result, time.perf_counter() - start


def base_metrics(spec: dict, started_at: str) -> dict:
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "run_id": spec["run_id"],
        "status": "failed",
        "error": None,
        "framework": {"name": spec["framework"], "api": spec["api"], "version": None,
                      "module": IMPLEMENTATIONS.get((spec["framework"], spec["api"]), "")},
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "workload": spec["workload"],
        "device": {"type": spec["device"], "name": cpu_model_name()},
        "started_at": started_at,
        "finished_at": started_at,
    }


def initial_predictions(impl: Implementation, x: np.ndarray, y: np.ndarray) -> dict:
    """Output shape and softmax cross-entropy of the freshly initialised model on one
    test batch, computed here in numpy so every framework is judged by the same formula.
    Untimed, before the warm-up; `dlbench check` compares these across frameworks."""
    logits = np.asarray(impl.logits(x), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True) if logits.ndim == 2 else logits
    if logits.ndim != 2 or len(logits) != len(y):
        return {"output_shape": [int(d) for d in logits.shape], "initial_loss": None}
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_softmax[np.arange(len(y)), y.astype(np.int64)].mean())
    return {"output_shape": [int(d) for d in logits.shape],
            "initial_loss": loss if np.isfinite(loss) else None}


def process_age_s() -> float | None:
    """Seconds since this process started (interpreter start, imports, spec checks):
    /proc/uptime minus the start time in /proc/self/stat (field 22, clock ticks after
    boot). Resolution is one clock tick (10 ms); None where /proc is not Linux's."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            # the command name (field 2) may hold spaces: count fields after its ')'
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime_s = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


def run(spec: dict, out_dir: str, world: World | None = None) -> int:
    """Run one spec (already validated); always leaves a metrics.json behind (a worker of a
    parallel run: its rank file, which the launcher merges into metrics.json)."""
    startup_s = process_age_s()
    world = world or World()
    metrics = base_metrics(spec, now_iso())
    metrics_path = os.path.join(out_dir, "metrics.json")
    if world.parallel:
        metrics_path = rank_file(out_dir, world.rank)
        os.makedirs(os.path.dirname(metrics_path), exist_ok=True)
        _QUIET["events"] = world.rank != 0
        # the launcher stops the others when one rank fails: record "stopped", not a failure
        signal.signal(signal.SIGTERM, _stop_requested)
        metrics["rank"] = {**world.to_dict(), "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                           "pid": os.getpid(),
                           "status": "running"}
    trainer = _Trainer(spec, metrics, world)
    exit_code = EXIT_FAILED
    try:
        trainer.train_and_evaluate()
        if startup_s is not None:
            metrics["timing"]["startup_s"] = startup_s
        exit_code = EXIT_OK
    except data_mod.DataError as exc:
        metrics["error"] = f"data: {exc}"
    except Unsupported as exc:
        metrics["status"], metrics["error"] = "unsupported", str(exc)
        exit_code = EXIT_UNSUPPORTED
    except KeyboardInterrupt:
        metrics["error"] = "interrupted"
    except StopRequested:
        metrics["status"], metrics["error"] = "stopped", "stopped by the launcher (another rank ended)"
    except Exception as exc:  # noqa: BLE001 - every failure must still produce metrics
        impl = trainer.impl
        oom = impl.is_out_of_memory(exc) if impl else isinstance(exc, MemoryError)
        metrics["status"] = "oom" if oom else "failed"
        metrics["error"] = f"{type(exc).__name__}: {exc}".strip()[:2000]
        exit_code = EXIT_OOM if oom else EXIT_FAILED
        traceback.print_exc()
        if impl is not None and oom:  # the peak that did not fit, where the framework knows it
            metrics["memory"] = {**metrics.get("memory", {}), **device_memory(impl)}
    metrics["finished_at"] = now_iso()
    if world.parallel:  # the launcher merges the ranks and speaks for the run
        metrics["memory"] = {**metrics.get("memory", {}), "peak_rss_mb": peak_rss_mb()}
        metrics["rank"]["status"] = metrics["status"]
        write_json_atomic(metrics_path, metrics)
        return exit_code
    if metrics["status"] != "ok":
        emit("failed", status=metrics["status"], error=metrics["error"])
    metrics["memory"] = {**metrics.get("memory", {}), "peak_rss_mb": peak_rss_mb()}
    write_json_atomic(metrics_path, metrics)
    emit("done", status=metrics["status"], metrics=metrics_path)
    for line in closing_lines(metrics, metrics_path):  # for a person; the events are for machines
        print(line, flush=True)
    return exit_code


class StopRequested(Exception):
    """SIGTERM in a worker of a parallel run: the launcher is stopping every rank."""


def _stop_requested(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process
    raise StopRequested()


def closing_lines(metrics: dict, metrics_path: str) -> list[str]:
    """What happened, in words: the last lines of a run."""
    fw = metrics["framework"]
    what = f"{fw['name']}/{fw['api']} {metrics['workload']}"
    if metrics["status"] != "ok":
        head = f"dlbench: {what}: {metrics['status']}: {metrics['error']}"
    else:
        timing, steady = metrics["timing"], metrics.get("steady_state") or {}
        median = steady.get("images_per_s_median")
        steady_txt = f" (steady-state {median:,.0f})" if median else ""
        epochs = len(metrics["epochs"])
        head = (f"dlbench: {what}: ok, {epochs} epoch{'s' if epochs > 1 else ''} in "
                f"{timing['train_total_s']:.1f} s, {timing['images_per_s']:,.0f} img/s{steady_txt}, "
                f"test accuracy {metrics['test']['accuracy']:.4f} ({metrics['hyperparameters']['precision']})")
    return [head, f"dlbench: metrics written to {metrics_path}"]


def device_memory(impl: Implementation) -> dict:
    try:
        peak = impl.peak_device_memory_mb()
    except Exception:  # noqa: BLE001 - a device in a failed state may not answer
        peak = None
    return {"peak_device_mb": peak, "peak_device_kind": impl.device_memory_kind or None}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


class _Trainer:
    """Fills `metrics` step by step, so a failure keeps whatever was measured."""

    def __init__(self, spec: dict, metrics: dict, world: World):
        self.spec, self.metrics, self.world = spec, metrics, world
        self.impl: Implementation | None = None  # known once the framework file is imported

    def train_and_evaluate(self) -> None:
        spec, metrics = self.spec, self.metrics
        pair = (spec["framework"], spec["api"])
        problem = parallel_problem(*pair, world_size(spec))
        if problem:
            raise Unsupported(f"parallel ({world_size(spec)} workers): {problem}")
        if world_size(spec) > 1 and self.world.size != world_size(spec):
            raise RuntimeError(f"the spec asks for {world_size(spec)} workers but this worker's "
                               f"launcher started {self.world.size}")
        self.spec_given = spec
        spec = self.spec = worker_spec(spec, self.world)
        self.world = parallel_mod.pin_worker(self.world)
        if "rank" in metrics:
            metrics["rank"]["cpus"] = list(self.world.cpus)
        if self.world.parallel and not spec["threads"]["intra_op"]:
            # a worker owns its pinned CPUs: that many threads, not the machine's count
            spec["threads"]["intra_op"] = len(self.world.cpus) or None
        apply_thread_env(spec["threads"])
        np.random.seed(spec["seed"])
        problem = precision_problem(*pair, spec["precision"], spec["device"])
        if problem:  # known without importing anything
            raise Unsupported(f"precision {spec['precision']} on {spec['device']}: {problem}")
        precision_env = apply_precision_env(spec["precision"])
        module_name = IMPLEMENTATIONS[pair]
        os.environ.update(IMPORT_ENVIRONMENT.get(pair, {}))
        network_env = parallel_mod.network_environment(self.world)
        metrics["environment"] = {**IMPORT_ENVIRONMENT.get(pair, {}), **precision_env, **network_env}

        emit("import", module=module_name)
        t = time.perf_counter()
        module = importlib.import_module(module_name)
        import_s = time.perf_counter() - t
        impl: Implementation = module.Implementation(spec)
        impl.world = self.world
        self.impl = impl
        if spec["optimizer"] not in impl.optimizers:
            raise Unsupported(f"optimizer {spec['optimizer']}: {pair[0]}/{pair[1]} implements "
                              f"{', '.join(impl.optimizers)} only")
        metrics["framework"]["version"] = impl.version()
        # "ease of coding": the lines on this workload's path (workloads/loc.py), and the files
        metrics["lines_of_code"] = logical_lines_of_workload(
            str(module.__file__), "recurrent" if isinstance(impl.model_spec, RecurrentSpec) else "conv")
        metrics["lines_of_code_file"] = logical_lines_of_implementation(str(module.__file__))

        options = impl.configure()
        if self.world.parallel:  # a framework may put its own in place (Paddle's ends the process)
            signal.signal(signal.SIGTERM, _stop_requested)
        options["data_layout"] = impl.data_layout
        metrics["options"] = {**spec["options"], **options}
        metrics["device"]["name"] = impl.device_name()
        if impl.gpu:
            metrics["device"]["libraries"] = impl.gpu_libraries()

        ds = spec["dataset"]
        t = time.perf_counter()
        x_train, y_train = data_mod.load(ds, ds["train_split"], ds["train_limit"], spec["seed"])
        x_test, y_test = data_mod.load(ds, "test", ds["test_limit"], spec["seed"])
        bs, world = spec["batch_size"], self.world
        if world.parallel:  # this rank's rows of the test set; the train rows change per epoch
            keep = parallel_mod.shard_order(np.arange(len(x_test)), world, bs)
            x_test, y_test = x_test[keep], y_test[keep]
        if impl.data_layout == "NCHW" and x_train.ndim == 4:  # images; token ids stay (N, T)
            x_train = np.ascontiguousarray(x_train.transpose(0, 3, 1, 2))
            x_test = np.ascontiguousarray(x_test.transpose(0, 3, 1, 2))
        data_load_s = time.perf_counter() - t
        n_all = len(x_train)
        n_train = len(parallel_mod.shard_order(np.arange(n_all), world, bs))  # this rank's rows
        metrics["dataset"] = {"name": ds["name"], "train_split": ds["train_split"],
                              "synthetic": ds["synthetic"],
                              "train_samples": int(n_train), "test_samples": int(len(x_test)),
                              "layout": impl.data_layout if x_train.ndim == 4 else "NT"}
        metrics["hyperparameters"] = {
            "batch_size": bs, "epochs": spec["epochs"], "learning_rate": spec["learning_rate"],
            "optimizer": spec["optimizer"], "optimizer_params": ADAM if spec["optimizer"] == "adam" else {},
            "seed": spec["seed"], "warmup_steps": spec["warmup_steps"], "precision": spec["precision"],
            "window_steps": spec["window_steps"], "dropout": spec["dropout"]}
        if "parallel" in spec:
            metrics["hyperparameters"].update(global_batch_size=bs * world.size,
                                              base_learning_rate=spec["base_learning_rate"])
        if world.parallel:
            metrics["rank"]["dropped_train_samples"] = n_all - n_train * world.size

        model_spec = MODELS[spec["workload"]]
        if not spec["dropout"]:
            model_spec = without_dropout(model_spec)
        emit("build", workload=model_spec.name)
        clock = Clock(impl)
        params, build_s = clock.time(impl.build, model_spec)
        metrics["model"] = {"parameters": int(params), "expected_parameters": model_spec.parameters,
                            **initial_predictions(impl, x_test[:bs], y_test[:bs])}
        metrics["precision"] = {"policy": spec["precision"], "environment": precision_env,
                                "effective": impl.precision_settings()}

        if world.parallel:  # the warm-up sees a rank's epoch: its length, its batches
            first = parallel_mod.shard_order(np.arange(n_all), world, bs)
            x_warm, y_warm = x_train[first], y_train[first]
        else:
            x_warm, y_warm = x_train, y_train
        first_step_s, warmup_s, warmed = warm_up(impl, clock, spec, (x_warm, y_warm), (x_test, y_test))
        metrics["warmup"] = warmed
        emit("warmup", first_step_s=round(first_step_s, 4), warmup_s=round(warmup_s, 4))

        epochs = []
        windows = impl.step_windows
        for epoch in range(1, spec["epochs"] + 1):
            # Same order in every framework: a permutation drawn from the run's seed.
            order = np.random.default_rng(spec["seed"] + epoch).permutation(n_all)
            order = parallel_mod.shard_order(order, world, bs)  # the whole order on one worker
            xe, ye = x_train[order], y_train[order]
            impl.barrier()  # every rank starts the clock together
            emit("timed", phase="begin", epoch=epoch)  # the host's energy counter brackets these
            (loss, acc), train_s = clock.time(windowed(impl.train_epoch, windows), xe, ye, bs)
            emit("timed", phase="end", epoch=epoch, images=n_train)
            record = {"epoch": epoch, "train_s": train_s, "images_per_s": n_train / train_s,
                      "loss": float(loss), "accuracy": float(acc),
                      "test_loss": None, "test_accuracy": None, "test_s": None}
            if spec["eval_every_epoch"] or epoch == spec["epochs"]:
                (tl, ta), test_s = clock.time(impl.evaluate, x_test, y_test, bs)
                record.update(test_loss=float(tl), test_accuracy=float(ta), test_s=test_s)
            epochs.append(record)
            # rank 0 speaks for a parallel run: every rank's images in rank 0's time
            emit("epoch", epoch=epoch, epochs=spec["epochs"], train_s=round(train_s, 3),
                 images_per_s=round(record["images_per_s"] * world.size, 1), loss=round(record["loss"], 4),
                 accuracy=round(record["accuracy"], 4), test_accuracy=record["test_accuracy"])

        last = epochs[-1]
        train_total_s = sum(e["train_s"] for e in epochs)
        metrics["epochs"] = epochs
        metrics["test"] = {"loss": last["test_loss"], "accuracy": last["test_accuracy"]}
        metrics["timing"] = {
            "import_s": import_s, "data_load_s": data_load_s, "build_s": build_s,
            "first_step_s": first_step_s, "warmup_s": warmup_s,
            "train_total_s": train_total_s, "test_s": last["test_s"],
            "images_per_s": n_train * len(epochs) / train_total_s,
            "test_images_per_s": len(x_test) / last["test_s"] if last["test_s"] else 0.0,
        }
        metrics["steady_state"] = steady_state(windows, bs)
        metrics["memory"] = device_memory(impl)
        if world.parallel:
            impl.barrier()  # no rank reports before every rank has finished
            metrics["rank"]["communication"] = impl.communication()
            metrics["rank"]["mechanism"] = PARALLEL[pair]["mechanism"]
        metrics["status"] = "ok"
        if "parallel" in spec and not world.parallel:  # the 1-worker run of a scaling series
            node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
            one = {**metrics, "rank": {"rank": 0, "local_rank": 0, "node": node, "mechanism": "one process",
                                       "cpus": sorted(os.sched_getaffinity(0)), "dropped_train_samples": 0}}
            metrics["parallel"] = merge_ranks(self.spec_given, [one], metrics, launcher="none",
                                              hosts=[node])["parallel"]


def worker_spec(spec: dict, world: World) -> dict:
    """The spec as one worker trains it: the per-worker batch (strong scaling splits the
    global one) and the learning rate after the suite's rule; the base rate is kept."""
    spec = {**spec, "threads": dict(spec["threads"]), "base_learning_rate": spec["learning_rate"]}
    parallel = spec.get("parallel")
    if not parallel:
        return spec
    size = world_size(spec)
    if parallel["scaling"] == "strong":
        spec["batch_size"] //= size
    factor = {"none": 1.0, "linear": float(size), "sqrt": size ** 0.5}[parallel["learning_rate_rule"]]
    spec["learning_rate"] = spec["learning_rate"] * factor
    return spec


def without_dropout(model):
    """The model with every dropout rate 0 (spec `dropout: false`): what the parallel
    correctness check trains, so that N workers' masks cannot differ from one worker's."""
    if isinstance(model, ConvNetSpec):
        return replace(model, dropout=0.0, blocks=tuple(replace(b, dropout=0.0) for b in model.blocks))
    return model


def windowed(train_epoch, windows: StepWindows):
    """train_epoch with the steady-state windows counting (from inside the clock's start)."""
    def timed_epoch(*args):
        windows.begin()
        try:
            return train_epoch(*args)
        finally:
            windows.end()
    return timed_epoch


def warm_up(impl: Implementation, clock: Clock, spec: dict, train: tuple, test: tuple
            ) -> tuple[float, float, dict]:
    """Untimed by the epochs: real training steps on the first batches (the first one, where
    tracing and compiling happen, reported on its own), then calls shaped like the timed ones
    (full batches then the tail, in one call), in training and in evaluation, so that no
    batch shape, and no call shape, of the timed region is compiled or autotuned inside the
    clock. Call shapes matter too: Keras gives a data set whose length is a multiple of the
    batch a static batch dimension and any other length a dynamic one, traced apart."""
    (x, y), (xt, yt) = train, test
    bs, n = spec["batch_size"], len(x)
    _, first_step_s = clock.time(impl.train_epoch, x[:bs], y[:bs], bs)
    rest_s, steps = 0.0, 1
    if n > bs and (spec["warmup_steps"] > 1 or n % bs):  # else the first step was an epoch's shape
        rest = like_an_epoch(n, bs, (spec["warmup_steps"] - 1) * bs)
        pick = (np.arange(rest) + bs) % n  # the batches after the first, wrapping round
        rest_s += clock.time(impl.train_epoch, x[pick], y[pick], bs)[1]
        steps += -(-rest // bs)
    m = like_an_epoch(len(xt), bs, bs)
    rest_s += clock.time(impl.evaluate, xt[:m], yt[:m], bs)[1]
    return first_step_s, first_step_s + rest_s, {
        "train_steps": steps, "train_batch_sizes": batch_sizes(n, bs),
        "eval_batch_sizes": batch_sizes(m, bs)}


def like_an_epoch(n: int, batch_size: int, at_least: int) -> int:
    """A length that splits into batches the way n does (whole batches, then n's tail),
    with at least one whole batch and about `at_least` samples; n itself when n <= batch."""
    if n <= batch_size:
        return n
    whole = min(max(at_least // batch_size, 1), n // batch_size)
    return whole * batch_size + n % batch_size


def steady_state(windows: StepWindows, batch_size: int) -> dict:
    """Median and spread of the windows' throughput; None figures when no epoch held a whole
    window (the whole-epoch figure is then the only one)."""
    rates = sorted(windows.steps * batch_size / s for s in windows.window_s if s > 0)
    result: dict = {"window_steps": windows.steps, "windows": len(rates),
                    "window_s": [round(s, 6) for s in windows.window_s],
                    "images_per_s_median": None, "images_per_s_cv": None,
                    "images_per_s_min": None, "images_per_s_max": None}
    if rates:
        mean = sum(rates) / len(rates)
        sd = (sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)) ** 0.5 if len(rates) > 1 else 0.0
        mid = len(rates) // 2
        median = rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2
        result.update(images_per_s_median=median, images_per_s_cv=sd / mean,
                      images_per_s_min=rates[0], images_per_s_max=rates[-1])
    return result
