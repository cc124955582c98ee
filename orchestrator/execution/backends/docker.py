"""Docker backend: one locked-down container per run, driven through the docker SDK.

Registered as `docker` in orchestrator/execution/backends/__init__.py (imported only when
chosen: `dlbench plan` never loads the docker SDK).
"""
from __future__ import annotations

import os
import threading
import time
import uuid

from docker.client import DockerClient
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest
from requests.exceptions import ChunkedEncodingError, ReadTimeout
from requests.exceptions import ConnectionError as RequestsConnectionError

from orchestrator import images
from orchestrator.errors import DlbenchError
from orchestrator.execution import sysinfo
from orchestrator.execution.backends.base import (
    CUDA_CACHE_MAXSIZE,
    DirectBackend,
    Execution,
    OutputSink,
    Unavailable,
    cuda_cache_dir,
    cuda_cache_record,
    observed,
    tree_bytes,
)
from orchestrator.execution.monitor import MB
from orchestrator.images.base import BASE_FIX, missing_base
from orchestrator.plan.suite import PlannedRun, Suite
from orchestrator.results.directory import RunDir

CONTAINER_UID = 10001          # the images' non-root user
CONTAINER_RESULTS = "/results"
CONTAINER_DATA = "/data"
CONTAINER_COMPILE_CACHE = "/cache/compile"
CONTAINER_CUDA_CACHE = "/cache/cuda"
PID_REFRESH_S = 5.0            # how stale the container's process list may be (docker top)
GPU_DRIVER_ERROR = "could not select device driver"
RESULTS_LABEL = "org.dlbench.results"   # the results directory a container writes into
NO_GPU_MESSAGE = ("GPU requested but the NVIDIA container toolkit is not installed or not "
                  "configured for this Docker engine; install nvidia-container-toolkit and restart "
                  "dockerd, or run the CPU suite (make bench)")


def connect():
    """(client, None) when an engine answers, else (None, reason)."""
    try:
        client = DockerClient.from_env(timeout=120)
        client.ping()
        return client, None
    except (DockerException, RequestsConnectionError) as exc:
        endpoint = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return None, f"{endpoint}: {connection_problem(exc)}"


class EngineUnreachable(DlbenchError):
    """The engine stopped answering mid-suite: no later run could start either."""


# What the SDK raises when the engine's socket is gone (APIError is an answer, not this).
CONNECTION_ERRORS = (RequestsConnectionError, ReadTimeout, ChunkedEncodingError)


def connection_problem(exc: BaseException) -> str:
    """The root cause of a requests/urllib3 error chain, e.g. 'Connection refused'."""
    def inner(e):
        return next((a for a in e.args if isinstance(a, BaseException)), None) \
            or e.__cause__ or e.__context__
    while inner(exc) is not None:
        exc = inner(exc)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0][:160]


def engine_lost(when: str, exc: Exception) -> EngineUnreachable:
    return EngineUnreachable(f"Docker engine stopped answering {when} "
                             f"({connection_problem(exc)}); start dockerd again")


def gpu_request(gpus: list | None = None) -> list[DeviceRequest]:
    """The run's GPUs (NVML indices or UUIDs), or every GPU when it names none."""
    if gpus:
        return [DeviceRequest(device_ids=[str(gpu) for gpu in gpus], capabilities=[["gpu"]])]
    return [DeviceRequest(count=-1, capabilities=[["gpu"]])]


class DockerBackend(DirectBackend):
    name = "docker"
    summary = "one container per run"
    enforces = frozenset({"cpus", "cpuset", "memory", "timeout", "network_off", "read_only_root",
                          "read_only_data", "non_root", "no_privileges", "gpus"})
    supports_no_build = True
    reruns_recorded_images = True

    def __init__(self, client, build: bool = True, build_options=None):
        self.client = client
        self.build = build
        self.build_options = build_options or images.BuildOptions.from_env()
        self.session = uuid.uuid4().hex[:8]
        self._current = None

    @classmethod
    def open(cls) -> DockerBackend:
        client, problem = connect()
        if client is None:
            raise Unavailable(f"BACKEND=docker but no Docker engine is reachable ({problem}); "
                              "start dockerd or set DOCKER_HOST",
                              reason=f"No Docker engine reachable ({problem})")
        return cls(client)

    def check_can_build(self) -> None:
        """Unavailable when no framework image can be built here (no base image to be had):
        `--backend auto` then runs on the local backend; `--backend docker` stops in its
        preflight, in one line saying what to do. --no-build needs no base."""
        pinned = {fl.base for spec in images.load_images(check_locks=False).values()
                  for fl in spec.flavours.values()}
        problem = missing_base(self.client, pinned, self.build_options.base_image)
        if problem is not None:
            raise Unavailable(f"BACKEND=docker but no image can be built here: {problem}; "
                              f"{BASE_FIX}, or use --backend local",
                              reason=f"Docker cannot build images here: {problem}")

    @classmethod
    def for_recorded_images(cls, image_ids: dict[str, str], tags: dict[str, str | None]) -> DockerBackend:
        client, problem = connect()
        if client is None:
            raise DlbenchError(f"rerun needs a Docker engine ({problem})")
        for key, image_id in image_ids.items():
            try:
                client.images.get(image_id)
            except ImageNotFound:
                raise DlbenchError(
                    f"image {image_id} ({tags.get(key) or key}) recorded by the bundle is not present "
                    "locally; load that exact image (docker load) to rerun: a rebuilt image has "
                    "another ID") from None
        return RecordedImageBackend(client, image_ids, tags)

    def system_info(self) -> dict:
        return sysinfo.collect(self.client)

    # -- preflight ----------------------------------------------------------
    def preflight(self, suite: Suite) -> None:
        self.preflight_images(suite)
        if "gpu" in suite.devices:
            self.check_gpus(suite)
            for gpus in sorted({tuple(run.gpus or ()) for run in suite.runs if run.spec["device"] == "gpu"},
                               key=str):
                self.check_gpu(list(gpus) or None)

    def preflight_images(self, suite: Suite) -> None:
        """The suite's images can be built here, or (--no-build) are here already."""
        if self.build:
            self.check_can_build()
        else:  # --no-build: a missing image is known before anything runs
            for framework, flavour in sorted({(r.framework, r.flavour) for r in suite.runs}):
                images.require_image(self.client, framework, flavour)

    def check_gpu(self, gpus: list | None = None) -> None:
        """Start a throw-away container asking for GPUs (`gpus`, else all): the engine itself
        says whether it can hand them out (no GPU image needs to be built first)."""
        probe = self._probe_image()
        try:
            container = self.client.containers.create(
                probe, command=["true"], device_requests=gpu_request(gpus),
                network_disabled=True, labels={"org.dlbench.probe": "gpu"})
        except APIError as exc:
            raise DlbenchError(_gpu_error(exc)) from None
        try:
            container.start()
            container.wait(timeout=60)
        except APIError as exc:
            raise DlbenchError(_gpu_error(exc)) from None
        finally:
            container.remove(force=True)

    def _probe_image(self) -> str:
        candidates = [self.build_options.base_image] if self.build_options.base_image else []
        candidates += [tag for image in self.client.images.list() for tag in image.tags]
        for tag in candidates:
            try:
                self.client.images.get(tag)
                return tag
            except (ImageNotFound, APIError):
                continue
        runtimes = self.client.info().get("Runtimes", {})
        if "nvidia" not in runtimes:
            raise DlbenchError(NO_GPU_MESSAGE)
        raise DlbenchError("cannot check GPU access: no image is present locally to start a probe "
                           "container; build one first (make images)")

    # -- environments -------------------------------------------------------
    def prepare(self, framework, flavour, progress):
        try:
            if self.build:
                info = images.ensure_image(self.client, framework, flavour, self.build_options,
                                           progress=progress)
            else:
                info = images.require_image(self.client, framework, flavour)
        except CONNECTION_ERRORS as exc:
            raise engine_lost(f"while preparing {framework}/{flavour}", exc) from None
        return {"kind": "image", **info.to_dict()}

    def dataset_path(self, run: PlannedRun, host_dir: str) -> str:
        return f"{CONTAINER_DATA}/{run.dataset}"

    # -- one run ------------------------------------------------------------
    def container_config(self, run: PlannedRun, run_dir: RunDir, host_data_dir: str,
                         environment: dict) -> dict:
        """Everything the container is created with; a test inspects the result."""
        res = run.resources
        user = CONTAINER_UID if os.geteuid() == 0 else os.geteuid()
        config = {
            "image": environment["id"] or environment["tag"],
            "command": ["run", "--spec", f"{CONTAINER_RESULTS}/{run.run_id}/spec.json"],
            "name": f"dlbench-{self.session}-{run.run_id}",
            "labels": {"org.dlbench.run-id": run.run_id, "org.dlbench.session": self.session,
                    RESULTS_LABEL: str(run_dir.path.parent.parent)},
            "volumes": {
                **({} if run.synthetic else {   # synthetic data is generated inside
                    str(host_data_dir): {"bind": self.dataset_path(run, host_data_dir), "mode": "ro"}}),
                str(run_dir.path): {"bind": f"{CONTAINER_RESULTS}/{run.run_id}", "mode": "rw"},
            },
            "user": f"{user}:{user}",
            "network_disabled": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            # exec: JIT compilers (torch.compile, Theano) load the code they compile from here
            "tmpfs": {"/tmp": "rw,nosuid,nodev,exec,size=2g"},
            "environment": {"PYTHONUNBUFFERED": "1"},
            "detach": True,
        }
        cache = self.compile_cache(run, environment)
        if cache is not None:
            config["volumes"][str(cache)] = {"bind": CONTAINER_COMPILE_CACHE, "mode": "rw"}
            config["environment"]["DLBENCH_COMPILE_CACHE"] = CONTAINER_COMPILE_CACHE
        if res.get("cpus"):
            config["nano_cpus"] = int(float(res["cpus"]) * 1e9)
        if res.get("cpuset"):
            config["cpuset_cpus"] = res["cpuset"]
        if res.get("memory"):
            config["mem_limit"] = res["memory"]
            config["memswap_limit"] = res["memory"]  # no swap: an overflow is an OOM, not a crawl
        if run.spec["device"] == "gpu":
            config["device_requests"] = gpu_request(run.gpus)
            # PTX the driver compiles for this GPU (TensorFlow for Hopper) outlives the container
            config["volumes"][str(self.cuda_cache(run, environment))] = {"bind": CONTAINER_CUDA_CACHE,
                                                                          "mode": "rw"}
            config["environment"].update(CUDA_CACHE_PATH=CONTAINER_CUDA_CACHE,
                                         CUDA_CACHE_MAXSIZE=str(CUDA_CACHE_MAXSIZE))
        return config

    @staticmethod
    def compile_cache(run: PlannedRun, environment: dict):
        """Made on first use and owned by the container's user (it writes there)."""
        cache = images.compile_cache_dir(run.framework, run.flavour,
                                         environment["id"] or environment["tag"])
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(cache, CONTAINER_UID, CONTAINER_UID)
        return cache

    @staticmethod
    def cuda_cache(run: PlannedRun, environment: dict):
        """The image's CUDA compute cache on the host, made as compile_cache is."""
        image = (environment["id"] or environment["tag"]).split(":")[-1][:16]
        cache = cuda_cache_dir(f"{run.framework}-{run.flavour}-{image}")
        cache.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(cache, CONTAINER_UID, CONTAINER_UID)
        return cache

    def execute(self, run, run_dir, host_data_dir, environment, on_event) -> Execution:
        if os.geteuid() == 0:  # the container's non-root user must be able to write here
            os.chown(run_dir.path, CONTAINER_UID, CONTAINER_UID)
        config = self.container_config(run, run_dir, host_data_dir, environment)
        resources = self.recorded_resources(run)
        gpu_run = run.spec["device"] == "gpu"
        cuda_cache = self.cuda_cache(run, environment) if gpu_run else None
        cuda_before = tree_bytes(cuda_cache) if cuda_cache is not None else 0
        recorded: dict = {}
        try:
            container = self.client.containers.create(**config)
        except APIError as exc:
            return Execution(None, message=f"container could not be created: {_api_message(exc)}",
                             resources=resources)
        except CONNECTION_ERRORS as exc:
            raise engine_lost(f"during run {run.run_id}", exc) from None
        self._current = container
        info = {"id": container.id, "name": container.name}
        # monitor.jsonl made now, before the container (which can write its run directory) runs
        monitor = self.monitor_run(run, run_dir, container).open()
        sink = OutputSink(run_dir.file("output.log"), observed(on_event, monitor))
        try:
            try:
                container.start()
            except APIError as exc:
                message = _gpu_error(exc) if GPU_DRIVER_ERROR in str(exc) else _api_message(exc)
                return Execution(None, message=f"container did not start: {message}",
                                 container=info, resources=resources)
            monitor.start()  # before the output is followed: it marks the timed epochs
            if gpu_run:
                recorded["gpus"] = self.recorded_gpus(run, monitor)
            follower = threading.Thread(target=self._follow, args=(container, sink), daemon=True)
            follower.start()
            exit_code, timed_out = self._wait(container, run)
            follower.join(timeout=30)
            try:
                state = self.client.api.inspect_container(container.id)["State"]
            except NotFound:  # removed from outside while it ran: it was killed
                state = {}
            return Execution(exit_code, oom_killed=bool(state.get("OOMKilled")),
                             timed_out=timed_out, container=info, resources=resources, recorded=recorded)
        except CONNECTION_ERRORS as exc:
            raise engine_lost(f"during run {run.run_id}", exc) from None
        finally:
            monitor.stop()
            sink.close()
            if cuda_cache is not None:  # into the dict the returned Execution holds
                recorded["cuda_cache"] = cuda_cache_record(cuda_cache, cuda_before)
            self._current = None
            try:
                container.remove(force=True)
            except (NotFound, APIError, *CONNECTION_ERRORS):
                pass  # already gone, or the engine is: a resume removes it (remove_leftovers)

    @staticmethod
    def _wait(container, run: PlannedRun) -> tuple[int, bool]:
        """(exit code, timed out). The SDK signals both "timeout reached" and "engine
        gone" with a requests error; the clock tells them apart."""
        started = time.monotonic()
        try:
            return container.wait(timeout=run.timeout)["StatusCode"], False
        except CONNECTION_ERRORS:
            if time.monotonic() - started < run.timeout:
                raise
        container.stop(timeout=10)
        return container.wait(timeout=60)["StatusCode"], True

    def remove_leftovers(self, results_path) -> list[str]:
        """Containers an earlier, interrupted attempt left writing into these results
        (the engine was unreachable then): stop them before their runs start again."""
        try:
            found = self.client.containers.list(
                all=True, filters={"label": f"{RESULTS_LABEL}={results_path}"})
            for container in found:
                try:
                    container.remove(force=True)
                except NotFound:
                    pass
        except CONNECTION_ERRORS as exc:
            raise engine_lost("while looking for leftover containers", exc) from None
        return [f"container {container.name}" for container in found]

    @staticmethod
    def _follow(container, sink: OutputSink) -> None:
        try:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                sink.feed(chunk)
        except (APIError, *CONNECTION_ERRORS, OSError):
            pass  # the run's outcome comes from wait/inspect, not from the log stream (nor a full disk)

    def interrupt(self) -> None:
        container = self._current
        if container is not None:
            try:
                container.stop(timeout=5)
            except (NotFound, APIError):
                pass

    def host_sampler(self, started) -> DockerStatsSampler:
        return DockerStatsSampler(started)


class RecordedImageBackend(DockerBackend):
    """`dlbench rerun`: the docker backend with each framework/flavour pinned to a recorded
    image ID (never rebuilt, never whatever its tag points at today)."""

    def __init__(self, client, image_ids: dict[str, str], tags: dict[str, str | None]):
        super().__init__(client, build=False)
        self.image_ids, self.tags = image_ids, tags

    def prepare(self, framework, flavour, progress):
        key = f"{framework}/{flavour}"
        image = self.client.images.get(self.image_ids[key])
        progress(f"{self.image_ids[key]} (recorded as {self.tags.get(key) or 'untagged'})")
        return {"kind": "image", **images.ImageInfo.from_image(image, self.tags.get(key) or "").to_dict()}


# -- the host monitor's view of a container ---------------------------------------

class DockerStatsSampler:
    """Follows the engine's stats stream (`container.stats(stream=True, decode=True)`)
    in a thread and hands out the latest sample. The engine refreshes it about once a
    second, so at shorter intervals CPU/memory repeat their last value (GPU lines do not)."""

    def __init__(self, container):
        self.container = container
        self._latest: dict | None = None
        self._pids: set[int] | None = None
        self._pids_at = 0.0
        self._stream = None
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            self._stream = self.container.stats(stream=True, decode=True)
            for raw in self._stream:
                sample = docker_sample(raw)
                if sample is not None:
                    self._latest = sample
        except Exception:  # noqa: BLE001 - the container went away: the stream simply ends
            pass

    def read(self) -> dict | None:
        return self._latest

    def pids(self) -> set[int] | None:
        """The container's processes by host PID (`docker top`), to find its own among
        those NVML lists on a GPU."""
        now = time.monotonic()
        if self._pids is None or now - self._pids_at > PID_REFRESH_S:
            top = self.container.top()
            column = top["Titles"].index("PID")
            self._pids = {int(row[column]) for row in top.get("Processes") or []}
            self._pids_at = now
        return self._pids

    def close(self) -> None:
        stream = self._stream
        close = getattr(stream, "close", None)
        if close:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a finished stream
                pass
        self._thread.join(timeout=2)


def docker_sample(raw: dict) -> dict | None:
    """CPU % and memory from one Docker stats object, computed as `docker stats` does:
    CPU from the delta against the previous sample the engine includes (precpu_stats),
    memory as usage minus inactive page cache (cgroup v1: total_inactive_file, v2: inactive_file)."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    mem = raw.get("memory_stats") or {}
    if "usage" not in mem:
        return None  # the container is not running (any more)
    cpu_percent = None
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    if pre.get("system_cpu_usage") and system_delta > 0:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        cores = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or [1])
        cpu_percent = max(0.0, cpu_delta / system_delta * cores * 100)
    extra = mem.get("stats") or {}
    cache = extra.get("total_inactive_file", extra.get("inactive_file", 0))
    return {"cpu_percent": cpu_percent, "memory_mb": max(0, mem["usage"] - cache) / MB}


def _api_message(exc: APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip().splitlines()[0][:300]


def _gpu_error(exc: APIError) -> str:
    return NO_GPU_MESSAGE if GPU_DRIVER_ERROR in str(exc) else \
        f"GPU check failed: {_api_message(exc)}"
