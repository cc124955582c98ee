"""What every backend provides, and the output handling they share."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from contract.events import EVENT_PREFIX

from orchestrator.results.directory import RunDir
from orchestrator.plan.suite import PlannedRun, Suite


@dataclass
class Execution:
    """What a backend saw of one run; results.classify turns it into an outcome."""
    exit_code: int | None
    oom_killed: bool = False
    timed_out: bool = False
    message: str | None = None
    container: dict | None = None
    resources: dict = field(default_factory=dict)


class Backend:
    name = ""

    def preflight(self, suite: Suite) -> None:
        """Fail early, in one sentence, when the suite cannot run here (e.g. no GPU)."""

    def prepare(self, framework: str, flavour: str, progress: Callable[[str], None]) -> dict:
        """Build or reuse the environment (image / venv); return its description."""
        raise NotImplementedError

    def dataset_path(self, run: PlannedRun, host_dir: str) -> str:
        """The dataset directory as the workload sees it."""
        raise NotImplementedError

    def execute(self, run: PlannedRun, run_dir: RunDir, host_data_dir: str,
                environment: dict, on_event: Callable[[dict], None]) -> Execution:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Stop whatever is running now (Ctrl-C)."""

    def remove_leftovers(self, results_path) -> list[str]:
        """Before a resume: stop what an earlier attempt left running for these results."""
        return []


class OutputSink:
    """Splits a byte stream into lines, keeps them all in output.log and hands
    the harness's `@dlbench {...}` event lines to a callback."""

    def __init__(self, log_path, on_event: Callable[[dict], None]):
        self.log = open(log_path, "ab")
        self.on_event = on_event
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        self.log.write(chunk)
        self.log.flush()
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._handle(line)

    def _handle(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith(EVENT_PREFIX):
            try:
                self.on_event(json.loads(line[len(EVENT_PREFIX):]))
            except json.JSONDecodeError:
                pass  # a garbled progress line is not worth failing a run for

    def close(self) -> None:
        if self._pending:
            self._handle(self._pending)
            self._pending = b""
        self.log.close()
