"""A backend without Docker or any framework, for unit tests of the real runner, resume,
rerun and outcome logic in seconds (integration tests show the same against a real engine).

It "executes" a run by writing what a real workload leaves in its run directory: the
output with `@dlbench` event lines (output.log, through the same OutputSink the real
backends use, so the runner sees the events) and a metrics.json valid against the
metrics schema, made from a real run's metrics (tests/fixtures/bundle-small) with the
run's own fields. The host monitor runs through the backend hook as for a real run.

What each run does is scripted by run id (BEHAVIOURS); a run not in the script is "ok".
The fake is registered in the backend registry only by tests (register_fake), never
shipped in orchestrator/.
"""
from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from contract.events import format_event
from orchestrator.errors import DlbenchError
from orchestrator.execution import backends
from orchestrator.execution.backends.base import Backend, DirectBackend, Execution, OutputSink
from orchestrator.results.directory import now_iso

REPO = Path(__file__).resolve().parent.parent
REAL_METRICS = REPO / "tests" / "fixtures" / "bundle-small" / "runs" / "01-pytorch-eager" / "metrics.json"

BEHAVIOURS = {
    "ok": "trains, writes valid metrics, exit 0",
    "failed": "the framework fails: metrics with status failed and its error, exit 1",
    "exit-code": "valid ok metrics, but the process exits 3",
    "no-metrics": "exit 0 without metrics.json",
    "corrupt-metrics": "a truncated metrics.json",
    "invalid-metrics": "metrics.json that is JSON but not the schema",
    "framework-oom": "the framework reports out of memory (metrics status oom), exit 1",
    "oom-killed": "the kernel's OOM killer ends it (exit 137, OOM flag)",
    "killed": "SIGKILLed from outside (exit 137), no metrics",
    "timeout": "runs past its timeout and is stopped",
    "not-started": "the engine refuses to start it (no exit code, a message)",
    "interrupt": "Ctrl-C arrives mid-run",
    "sigterm": "SIGTERM arrives at dlbench mid-run",
    "engine-lost": "the engine stops answering mid-run",
    "disk-full": "the results filesystem fills up mid-run",
    # what a hostile workload can plant in the run directory it may write
    "link-metrics": "trains, but metrics.json is a symbolic link to a valid metrics file outside "
                    "the run directory (a host file, HOST_FILE beside the results directory)",
    "link-dir": "trains, writes valid metrics, and plants a link to a directory outside the run",
    "fifo": "trains, writes valid metrics, and leaves a FIFO (named pipe) behind",
    "link-monitor": "before the host monitor opens monitor.jsonl, plants it as a symbolic link to "
                    "a host file (HOST_MONITOR_FILE beside the results directory); then trains ok",
}
HOST_FILE = "host-file-{run_id}.json"  # link-metrics' target, in the results root
HOST_MONITOR_FILE = "host-monitor-{run_id}.txt"  # link-monitor's target, in the results root


def real_metrics() -> dict:
    return json.loads(REAL_METRICS.read_text(encoding="utf-8"))


def metrics_for(spec: dict, status: str = "ok", error: str | None = None) -> dict:
    """A real run's metrics.json with this run's fields (ids, framework, data, epochs)."""
    metrics = real_metrics()
    template = metrics["epochs"][-1]
    dataset = spec["dataset"]
    metrics.update({
        "run_id": spec["run_id"], "status": status, "error": error, "workload": spec["workload"],
        "started_at": now_iso(), "finished_at": now_iso(),
        "framework": {"name": spec["framework"], "api": spec["api"], "version": "0.0+fake",
                      "module": f"workloads.{spec['framework']}_{spec['api']}"},
        "device": {"type": spec["device"], "name": "fake device"},
        "epochs": [{**template, "epoch": n} for n in range(1, spec["epochs"] + 1)],
    })
    metrics["dataset"].update({"name": dataset["name"], "train_split": dataset["train_split"],
                               "synthetic": bool(dataset.get("synthetic")),
                               "train_samples": dataset.get("train_limit") or 512,
                               "test_samples": dataset.get("test_limit") or 256})
    metrics["hyperparameters"].update({key: spec[key] for key in
                                       ("batch_size", "epochs", "learning_rate", "optimizer", "seed",
                                        "warmup_steps", "precision") if key in spec})
    return metrics


class FixedSampler:
    """The monitor's host sampler for a fake run: one steady reading."""

    def read(self) -> dict:
        return {"cpu_percent": 100.0, "memory_mb": 256.0}

    def close(self) -> None:
        pass


class FakeBackend(DirectBackend):
    name = "fake"
    summary = "no process at all: a test double"
    enforces = frozenset({"timeout"})

    # What open() (the CLI path) gives new instances; tests set them on a subclass (scripted).
    script: dict[str, str] = {}
    fail_prepare: frozenset[str] = frozenset()   # "framework/flavour" keys
    refuse: str | None = None                    # preflight's one-line error
    leftovers: tuple[str, ...] = ()              # what remove_leftovers finds
    instances: ClassVar[list[FakeBackend]] = []

    def __init__(self, script: dict[str, str] | None = None, fail_prepare=None, refuse=None,
                 leftovers=None):
        self.script = dict(self.script if script is None else script)
        unknown = set(self.script.values()) - set(BEHAVIOURS)
        assert not unknown, f"unknown fake behaviours: {unknown}"
        self.fail_prepare = frozenset(self.fail_prepare if fail_prepare is None else fail_prepare)
        self.refuse = self.refuse if refuse is None else refuse
        self.leftovers = tuple(self.leftovers if leftovers is None else leftovers)
        self.calls: list[tuple] = []
        self.instances.append(self)

    @classmethod
    def open(cls) -> FakeBackend:
        return cls()

    @classmethod
    def for_recorded_images(cls, image_ids, tags) -> FakeBackend:
        backend = cls()
        backend.calls.append(("for_recorded_images", dict(image_ids)))
        return backend

    def preflight(self, suite) -> None:
        self.calls.append(("preflight", suite.name))
        if self.refuse:
            raise DlbenchError(self.refuse)

    def prepare(self, framework, flavour, progress) -> dict:
        key = f"{framework}/{flavour}"
        self.calls.append(("prepare", key))
        if key in self.fail_prepare:
            raise DlbenchError(f"{key}: the fake build failed")
        progress(f"fake environment for {key}")
        return {"kind": "image", "tag": f"fake/{framework}:{flavour}",
                "id": f"sha256:{framework}-{flavour}-fake", "framework_version": "0.0+fake",
                "python": "3.11"}

    def dataset_path(self, run, host_dir) -> str:
        return f"/fake-data/{run.dataset}"

    def remove_leftovers(self, results_path) -> list[str]:
        self.calls.append(("remove_leftovers", str(results_path)))
        return list(self.leftovers)

    def interrupt(self) -> None:
        self.calls.append(("interrupt",))

    def host_sampler(self, started: Any) -> FixedSampler:
        return FixedSampler()

    def executed(self) -> list[str]:
        return [call[1] for call in self.calls if call[0] == "execute"]

    def execute(self, run, run_dir, host_data_dir, environment, on_event) -> Execution:
        self.calls.append(("execute", run.run_id))
        behaviour = self.script.get(run.run_id, "ok")
        spec = json.loads(run_dir.file("spec.json").read_text(encoding="utf-8"))
        resources = self.recorded_resources(run)
        sink = OutputSink(run_dir.file("output.log"), on_event)
        if behaviour == "link-monitor":  # a workload that ran before the monitor opened it
            host_file = run_dir.path.parent.parent.parent / HOST_MONITOR_FILE.format(run_id=run.run_id)
            host_file.write_text("host file\n", encoding="utf-8")
            os.symlink(host_file, run_dir.file("monitor.jsonl"))
        monitor = self.monitor_run(run, run_dir, run.run_id).start()
        try:
            return self._act(behaviour, spec, run, run_dir, sink, resources)
        finally:
            monitor.stop()
            sink.close()

    def _act(self, behaviour, spec, run, run_dir, sink, resources) -> Execution:
        def say(event: str, **fields) -> None:
            sink.feed((format_event(event, **fields) + "\n").encode())

        def write_metrics(metrics) -> None:
            text = metrics if isinstance(metrics, str) else json.dumps(metrics, indent=2)
            run_dir.file("metrics.json").write_text(text, encoding="utf-8")

        def done(exit_code: int | None, **flags) -> Execution:
            return Execution(exit_code, resources=resources, **flags)

        sink.feed(b"fake workload starting\n")
        say("import", module=f"workloads.{run.framework}_{run.api}")
        say("build", workload=spec["workload"])
        if behaviour == "not-started":
            return done(None, message="container did not start: fake engine said no")
        say("warmup", first_step_s=0.5, warmup_s=1.0)
        mid_run = {"interrupt": KeyboardInterrupt,
                   "engine-lost": DlbenchError(f"Fake engine stopped answering during run {run.run_id} "
                                               "(Connection refused); start it again"),
                   "disk-full": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))}
        if behaviour in mid_run:
            raise mid_run[behaviour]
        if behaviour == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the runner turns it into KeyboardInterrupt
            raise AssertionError("SIGTERM did not interrupt the run")
        if behaviour in ("killed", "oom-killed", "timeout"):
            say("epoch", epoch=1, epochs=spec["epochs"], train_s=1.0, images_per_s=256.0,
                loss=2.0, accuracy=0.3)
            return done(137, oom_killed=behaviour == "oom-killed", timed_out=behaviour == "timeout")
        for n in range(1, spec["epochs"] + 1):
            say("epoch", epoch=n, epochs=spec["epochs"], train_s=1.0, images_per_s=256.0,
                loss=1.0 / n, accuracy=0.5, test_accuracy=0.5)
        if behaviour == "failed":
            error = "RuntimeError: fake framework failure"
            write_metrics(metrics_for(spec, "failed", error))
            say("failed", status="failed", error=error)
            return done(1)
        if behaviour == "framework-oom":
            error = "out of memory (fake allocator) at batch size 128"
            write_metrics(metrics_for(spec, "oom", error))
            say("failed", status="oom", error=error)
            return done(1)
        if behaviour == "no-metrics":
            return done(0)
        if behaviour == "corrupt-metrics":
            write_metrics('{"schema_version": 1, "status": "o')
            return done(0)
        if behaviour == "invalid-metrics":
            write_metrics({"schema_version": 1, "status": "ok"})
            return done(0)
        if behaviour == "link-metrics":
            host_file = run_dir.path.parent.parent.parent / HOST_FILE.format(run_id=run.run_id)
            host_file.write_text(json.dumps(metrics_for(spec)), encoding="utf-8")
            os.symlink(host_file, run_dir.file("metrics.json"))
        else:
            write_metrics(metrics_for(spec))
        if behaviour == "link-dir":
            os.symlink(run_dir.path.parent.parent.parent, run_dir.file("elsewhere"))
        if behaviour == "fifo":
            os.mkfifo(run_dir.file("pipe"))
        say("done", status="ok", metrics=str(run_dir.file("metrics.json")))
        return done(3 if behaviour == "exit-code" else 0)


def scripted(script: dict[str, str] | None = None, **settings) -> type[FakeBackend]:
    """A FakeBackend class whose open() (the CLI's way in) makes instances with this
    script; settings: fail_prepare, refuse, leftovers, reruns_recorded_images."""
    attributes: dict[str, Any] = {"script": dict(script or {}), "instances": []}
    for key, value in settings.items():
        attributes[key] = frozenset(value) if key == "fail_prepare" else \
            tuple(value) if key == "leftovers" else value
    return type("ScriptedFakeBackend", (FakeBackend,), attributes)


@contextmanager
def registered(backend_class: type[Backend], name: str = "fake") -> Iterator[type[Backend]]:
    """The backend in the registry (as one `register` line would put it) for a while."""
    backends.register(name, backend_class)
    try:
        yield backend_class
    finally:
        backends.unregister(name)


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run directory, its bytes and mtime: "kept byte for byte"."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}
