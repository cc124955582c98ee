"""One writer per results directory (orchestrator.results.lock), shown with REAL second
processes: a live holder refuses every other writer in one line naming it; a killed one
leaves a lock that is found stale and taken over; every way out of a writer lets go.
The `dlbench run --resume` of the issue runs against a real `dlbench run` still writing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.errors import DlbenchError
from orchestrator.execution.resume import load_plan, resume_suite
from orchestrator.execution.runner import run_suite
from orchestrator.plan.suite import load_suite
from orchestrator.report import charts
from orchestrator.results import bundle, lock
from orchestrator.results.directory import ResultsDir
from tests.fake_backend import FakeBackend, registered, scripted

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "bundle-small"

HOLDER = """
import sys, time
from pathlib import Path
from orchestrator.results import lock
try:
    with lock.hold(Path(sys.argv[1]), say=lambda line: print(line, flush=True)):
        print("held", flush=True)
        time.sleep(600)
except KeyboardInterrupt:
    sys.exit(130)
"""

# `dlbench run` on a backend whose run never ends until it is stopped: the suite is still
# being written when the test looks at it.
WRITER = """
import sys, time
from orchestrator import cli
from orchestrator.report import charts
from tests.fake_backend import FakeBackend, registered

charts.all_charts = lambda groups, rows: []

class Endless(FakeBackend):
    def execute(self, run, run_dir, host_data_dir, environment, on_event):
        print("executing", run.run_id, flush=True)
        time.sleep(600)

with registered(Endless):
    sys.exit(cli.main(["run", sys.argv[1], "--backend", "fake", "--results", sys.argv[2]]))
"""


def start(script: str, *args: object, wait_for: str) -> subprocess.Popen:
    """A python process running `script`, once it has printed a line starting `wait_for`."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(wait_for):
            return proc
    proc.wait(10)
    raise AssertionError(f"the helper process ended first: {proc.stderr.read() if proc.stderr else ''}")


def stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    return proc.wait(60)


@pytest.fixture()
def helpers():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:  # a failed test must not leave a sleeping helper behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def refusal(directory: Path, holder: dict) -> str:
    return (f"{directory} is being written by dlbench pid {holder['pid']} on host "
            f"{holder['host']} since {holder['since']}; wait for it or stop it")


def lock_content(directory: Path) -> dict:
    return json.loads(lock.lock_path(directory).read_text(encoding="utf-8"))


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: its bytes and mtime."""
    return {p.relative_to(directory).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the lock itself

def test_a_live_holder_refuses_others_and_a_killed_one_is_taken_over(tmp_path, helpers):
    directory = tmp_path / "results"
    directory.mkdir()
    holder = start(HOLDER, directory, wait_for="held")
    helpers.append(holder)
    recorded = lock_content(directory)
    assert recorded["pid"] == holder.pid and recorded["host"] == socket.gethostname()

    said: list[str] = []
    before = tree(directory)
    with pytest.raises(DlbenchError) as info, lock.hold(directory, say=said.append):
        raise AssertionError("the lock of a live holder was taken")
    assert str(info.value) == refusal(directory, recorded)
    assert tree(directory) == before and said == []  # the refused writer wrote nothing

    assert stop(holder, signal.SIGKILL) == -signal.SIGKILL  # no `finally` runs: the file stays
    assert lock_content(directory) == recorded
    with lock.hold(directory, say=said.append):
        assert said == [f"{directory}: taking over the lock left by dlbench pid {holder.pid} on host "
                        f"{recorded['host']} since {recorded['since']} (that process has ended "
                        "without releasing it)"]
        assert lock_content(directory)["pid"] == os.getpid()
    assert not lock.lock_path(directory).exists()


@pytest.mark.parametrize("how", ["normal", "DlbenchError", "KeyboardInterrupt"])
def test_every_way_out_lets_go(tmp_path, how):
    directory = tmp_path / "results"
    directory.mkdir()
    raised = {"normal": None, "DlbenchError": DlbenchError("x"), "KeyboardInterrupt": KeyboardInterrupt()}[how]
    try:
        with lock.hold(directory, say=lambda line: None):
            assert lock.lock_path(directory).exists()
            if raised is not None:
                raise raised
    except (DlbenchError, KeyboardInterrupt) as exc:
        assert exc is raised
    assert not lock.lock_path(directory).exists()
    # another process takes it at once, and finds nothing left behind to explain
    done = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(600)", "pass"), str(directory)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "held\n", "")


def test_sigterm_ends_the_holder_through_its_finally(tmp_path, helpers):
    directory = tmp_path / "results"
    directory.mkdir()
    holder = start(HOLDER, directory, wait_for="held")
    helpers.append(holder)
    assert stop(holder, signal.SIGTERM) == 130  # KeyboardInterrupt, raised by the lock's handler
    assert not lock.lock_path(directory).exists()
    said: list[str] = []
    with lock.hold(directory, say=said.append):
        pass
    assert said == []


def test_holding_is_reentrant_within_one_process(tmp_path):
    directory = tmp_path / "results"
    directory.mkdir()
    with lock.hold(directory, say=lambda line: None):
        with lock.hold(directory / ".." / "results", say=lambda line: None):  # the same directory
            assert lock_content(directory)["pid"] == os.getpid()
        assert lock.lock_path(directory).exists()  # the inner exit does not let go
    assert not lock.lock_path(directory).exists()


def test_a_directory_that_cannot_be_locked_is_one_line(tmp_path):
    with pytest.raises(DlbenchError, match=r"^\S+/nowhere: no such results directory$"), \
            lock.hold(tmp_path / "nowhere", say=lambda line: None):
        pass


# ------------------------------------------------------------------ the writers hold it

class Watching(FakeBackend):
    """Looks at the lock file while each run executes."""
    seen: list[dict] = []

    def execute(self, run, run_dir, host_data_dir, environment, on_event):
        self.seen.append(lock_content(run_dir.path.parent.parent))
        return super().execute(run, run_dir, host_data_dir, environment, on_event)


def write_suite(tmp_path: Path, runs: int = 2) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent("""\
        name: locked
        defaults: {synthetic: true, epochs: 1, train_limit: 256, test_limit: 128}
        runs:
        """) + "".join(f"  - {{framework: pytorch, api: eager, seed: {n}}}\n" for n in range(runs)))
    return path


@pytest.fixture()
def quick_report(monkeypatch):
    monkeypatch.setattr(charts, "all_charts", lambda groups, rows: [])


@pytest.mark.usefixtures("quick_report")
def test_run_and_resume_hold_the_lock_while_they_write(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    with registered(Watching):
        Watching.seen = []
        results = run_suite(suite, Watching(), tmp_path / "results", say=lambda line: None).path
        assert [seen["pid"] for seen in Watching.seen] == [os.getpid()] * 2
        assert not lock.lock_path(results).exists() and bundle.verify(results) == []

        (results / "runs" / "02-pytorch-eager" / "run.json").unlink()  # one run to do again
        Watching.seen = []
        resume_suite(ResultsDir(results), load_plan(results)[0], Watching(), say=lambda line: None)
        assert [seen["pid"] for seen in Watching.seen] == [os.getpid()]
        assert not lock.lock_path(results).exists() and bundle.verify(results) == []


# ------------------------------------------------------------------ the issue, through the CLI

@pytest.mark.usefixtures("quick_report")
@pytest.mark.parametrize("stopped_by", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_resume_while_a_run_still_writes_is_refused_and_changes_nothing(tmp_path, capsys, helpers,
                                                                       monkeypatch, stopped_by):
    monkeypatch.delenv("BACKEND", raising=False)
    root = tmp_path / "results"
    writer = start(WRITER, write_suite(tmp_path), root, wait_for="executing 01-pytorch-eager")
    helpers.append(writer)
    [results] = root.iterdir()
    holder = lock_content(results)
    assert holder["pid"] == writer.pid
    before = tree(results)

    with registered(scripted()) as fake:
        code = cli.main(["run", "--resume", str(results)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"dlbench: error: {refusal(results, holder)}\n")
    assert tree(results) == before  # byte for byte, mtimes too
    assert fake.instances[0].calls == []  # no container removed, nothing run
    assert writer.poll() is None  # the first writer is unharmed

    code = stop(writer, stopped_by)
    with registered(scripted()) as fake:
        code_again = cli.main(["run", "--resume", str(results)])
    out, err = capsys.readouterr()
    assert (code_again, err) == (0, ""), out + err
    lines = out.splitlines()
    if stopped_by == signal.SIGTERM:  # stopped the way Ctrl-C stops it: it let go itself
        assert code == 130
        assert not any("taking over" in line for line in lines)
    else:  # no `finally` ran: its lock is found stale and taken over, in one line
        assert code == -signal.SIGKILL
        assert lines[0] == (f"{results}: taking over the lock left by dlbench pid {writer.pid} on host "
                            f"{holder['host']} since {holder['since']} (that process has ended "
                            "without releasing it)")
    assert f"Resuming {results}: 0 run(s) kept, 2 to run" in lines
    assert fake.instances[0].executed() == ["01-pytorch-eager", "02-pytorch-eager"]
    assert lines[-1] == f"Bundle verified: {results}"
    assert not lock.lock_path(results).exists()


@pytest.mark.usefixtures("quick_report")
def test_report_into_an_unsealed_directory_another_process_writes_is_refused(tmp_path, capsys, helpers):
    results = tmp_path / "20261122-000000-small"
    shutil.copytree(FIXTURE, results)
    (results / bundle.MANIFEST).unlink()  # unsealed: `report` would write report.html into it
    (results / "report.html").unlink()
    holder = start(HOLDER, results, wait_for="held")
    helpers.append(holder)
    recorded = lock_content(results)
    before = tree(results)
    code = cli.main(["report", str(results)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"dlbench: error: {refusal(results, recorded)}\n")
    assert tree(results) == before and not (results / "report.html").exists()
    code = cli.main(["report", str(results), "-o", str(results / "elsewhere.html")])  # inside it too
    assert (code, capsys.readouterr().err) == (2, f"dlbench: error: {refusal(results, recorded)}\n")
    assert tree(results) == before

    assert stop(holder, signal.SIGTERM) == 130
    assert cli.main(["report", str(results)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"Report: {results / 'report.html'}"
    assert (results / "report.html").is_file() and not lock.lock_path(results).exists()
