"""The real runner, resume, rerun and outcome classification, driven through a fake backend
(tests/fake_backend.py) in seconds: every outcome, interruption and resume, a failed
environment, a lost engine, a full disk, and the `dlbench run` command itself.
tests/integration/test_faults.py shows the same faults with a real engine and real containers.
"""
from __future__ import annotations

import json
import shutil
import signal
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import cli
from orchestrator.cli.bundle import verified_line
from orchestrator.errors import DlbenchError
from orchestrator.execution.rerun import rerun
from orchestrator.execution.resume import load_plan, pending_runs, resume_suite
from orchestrator.execution.runner import run_suite
from orchestrator.plan.suite import load_suite
from orchestrator.report import charts
from orchestrator.results import bundle
from orchestrator.results.directory import MIN_FREE_BYTES, ResultsDir
from tests.fake_backend import FakeBackend, registered, scripted, snapshot


def write_suite(tmp_path: Path, runs: int = 3, extra: str = "", frameworks=("pytorch/eager",)) -> Path:
    """A suite on synthetic data (no dataset files): `runs` runs of each framework/API, each
    its own seed (identical runs are refused: they would be repeats)."""
    lines = "".join(f"  - {{framework: {fw.split('/')[0]}, api: {fw.split('/')[1]}, seed: {seed}}}\n"
                    for seed, fw in enumerate(fw for fw in frameworks for _ in range(runs)))
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: fake
        defaults: {{synthetic: true, epochs: 2, train_limit: 256, test_limit: 128,
                   resources: {{cpus: 1, memory: 2g}}{extra}}}
        runs:
        """) + lines)
    return path


def records(results: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "run.json").read_text()) for d in sorted((results / "runs").iterdir())
            if (d / "run.json").exists()}


def outcomes(results: Path) -> dict[str, str]:
    return {run_id: record["outcome"] for run_id, record in records(results).items()}


@pytest.fixture()
def fake():
    with registered(FakeBackend):
        yield


@pytest.fixture()
def lines():
    said: list[str] = []
    return said


@pytest.fixture()
def quick_report(monkeypatch):
    """The report without its matplotlib charts (most of a suite's time here; the charts are
    tested in test_results_report.py). The outcome test keeps them: one real report."""
    monkeypatch.setattr(charts, "all_charts", lambda groups, rows: [])


# ------------------------------------------------------------------ outcomes

EXPECTED = {  # behaviour -> (outcome, message or its start, metrics_valid)
    "ok": ("ok", None, True),
    "failed": ("failed", "RuntimeError: fake framework failure", True),
    "exit-code": ("failed", "exit code 3", True),
    "no-metrics": ("failed", "the workload wrote no metrics.json (exit code 0)", False),
    "corrupt-metrics": ("failed", "metrics.json is not valid JSON (", False),
    "invalid-metrics": ("failed", "metrics.json does not match the schema: ", False),
    "framework-oom": ("oom", "out of memory (fake allocator) at batch size 128", True),
    "oom-killed": ("oom", "killed by the kernel's out-of-memory killer (memory limit reached)", False),
    "killed": ("killed", "the workload was killed (exit code 137)", False),
    "timeout": ("timeout", "the run exceeded its timeout and was stopped", False),
    "not-started": ("error", "container did not start: fake engine said no", False),
}


def test_every_outcome_is_classified_recorded_reported_and_the_bundle_verifies(fake, tmp_path, lines):
    suite = load_suite(write_suite(tmp_path, runs=len(EXPECTED)))
    script = {run.run_id: behaviour for run, behaviour in zip(suite.runs, EXPECTED)}
    backend = FakeBackend(script)
    results = run_suite(suite, backend, tmp_path / "results", say=lines.append).path

    assert backend.executed() == [run.run_id for run in suite.runs]  # a bad run never stops the suite
    found = records(results)
    for run_id, behaviour in script.items():
        outcome, message, metrics_valid = EXPECTED[behaviour]
        record = found[run_id]
        assert record["outcome"] == outcome, (behaviour, record)
        assert (record["message"] or "").startswith(message or ""), (behaviour, record["message"])
        assert record["metrics_valid"] is metrics_valid, behaviour
        assert record["backend"] == "fake"
        assert record["resources"] == {"cpus": 1, "memory": "2g", "enforced": False}  # fake enforces neither
        assert record["monitor"]["samples"] >= 1 and record["monitor"]["memory_mb"]["peak"] == 256.0
    assert found["01-pytorch-eager"]["exit_code"] == 0 and found["09-pytorch-eager"]["exit_code"] == 137
    assert found["11-pytorch-eager"]["exit_code"] is None
    corrupt = found["05-pytorch-eager"]["message"]
    assert corrupt.endswith("(exit code 0)")

    summary = json.loads((results / "summary.json").read_text())
    assert [r["outcome"] for r in summary["runs"]] == [EXPECTED[b][0] for b in script.values()]
    html = (results / "report.html").read_text()
    assert "Runs that did not finish" in html and "11-pytorch-eager" in html
    assert bundle.verify(results) == []
    plan = json.loads((results / "plan.json").read_text())
    assert plan["backend"] == "fake" and [r["run_id"] for r in plan["runs"]] == list(script)
    # the harness's event lines reached the user through the backend's output sink
    assert "    epoch 2/2  1.0 s  256 img/s  loss 0.5000  acc 0.5000  test acc 0.5000" in lines
    assert "    failed: RuntimeError: fake framework failure" in lines
    assert "[9/11] 09-pytorch-eager: pytorch/eager on cpu (fake)" in lines
    assert "    -> killed: the workload was killed (exit code 137)" in lines
    log = (results / "runs" / "01-pytorch-eager" / "output.log").read_text()
    assert log.startswith("fake workload starting\n@dlbench {\"event\": \"import\"")


@pytest.mark.usefixtures("quick_report")
def test_a_refused_preflight_creates_nothing(fake, tmp_path):
    suite = load_suite(write_suite(tmp_path))
    backend = FakeBackend(refuse="GPU requested but the fake has none")
    with pytest.raises(DlbenchError, match="^GPU requested but the fake has none$"):
        run_suite(suite, backend, tmp_path / "results", say=lambda line: None)
    assert not (tmp_path / "results").exists() and backend.executed() == []


@pytest.mark.usefixtures("quick_report")
def test_a_full_results_filesystem_is_refused_before_any_run(fake, tmp_path, monkeypatch):
    suite = load_suite(write_suite(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=2**20))
    root = tmp_path / "results"
    with pytest.raises(DlbenchError) as info:
        run_suite(suite, FakeBackend(), root, say=lambda line: None)
    assert str(info.value) == (f"{root}: only 1.0 MiB free for results (at least {MIN_FREE_BYTES // 2**20} "
                               "MiB needed); free some space or set DLBENCH_RESULTS / --results to another "
                               "filesystem")
    assert not root.exists()


# ------------------------------------------------------------------ environments

@pytest.mark.usefixtures("quick_report")
def test_one_environment_failing_does_not_stop_the_others_and_resume_retries_it(fake, tmp_path, lines):
    suite = load_suite(write_suite(tmp_path, runs=2, frameworks=("pytorch/eager", "tensorflow/keras")))
    backend = FakeBackend(fail_prepare={"tensorflow/cpu"})
    results = run_suite(suite, backend, tmp_path / "results", say=lines.append).path

    assert outcomes(results) == {"01-pytorch-eager": "ok", "02-pytorch-eager": "ok",
                                 "03-tensorflow-keras": "error", "04-tensorflow-keras": "error"}
    assert records(results)["03-tensorflow-keras"]["message"] == \
        "environment not available: tensorflow/cpu: the fake build failed"
    assert backend.executed() == ["01-pytorch-eager", "02-pytorch-eager"]  # nothing started without one
    assert "    failed: tensorflow/cpu: the fake build failed" in lines
    assert list(json.loads((results / "images.json").read_text())) == ["pytorch/cpu"]
    assert bundle.verify(results) == []
    # runs never sampled (monitor null) beside sampled ones: summary.csv is consistent
    assert verified_line(results) == (0, [f"Bundle verified: {results}"])
    kept = snapshot(results / "runs" / "01-pytorch-eager")

    again = FakeBackend()  # the environment can be made now
    suite, backend_name = load_plan(results)
    resume_suite(ResultsDir(results), suite, again, say=lines.append)
    assert backend_name == "fake"
    assert again.executed() == ["03-tensorflow-keras", "04-tensorflow-keras"]
    assert ("prepare", "pytorch/cpu") not in again.calls  # only what the pending runs need
    assert set(outcomes(results).values()) == {"ok"}
    assert snapshot(results / "runs" / "01-pytorch-eager") == kept
    assert list(json.loads((results / "images.json").read_text())) == ["pytorch/cpu", "tensorflow/cpu"]
    assert bundle.verify(results) == []


# ------------------------------------------------------------------ interruption and resume

@pytest.mark.usefixtures("quick_report")
@pytest.mark.parametrize("how", ["interrupt", "sigterm"])
def test_interruption_keeps_finished_runs_and_resume_reruns_only_the_pending(fake, tmp_path, lines, how):
    suite = load_suite(write_suite(tmp_path, runs=6))
    script = {"02-pytorch-eager": "failed", "03-pytorch-eager": "timeout",
              "04-pytorch-eager": "not-started", "05-pytorch-eager": how}
    backend = FakeBackend(script)
    previous_handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, backend, tmp_path / "results", say=lines.append)
    assert signal.getsignal(signal.SIGTERM) == previous_handler
    [results] = (tmp_path / "results").iterdir()

    assert backend.calls[-1] == ("interrupt",)  # what was running was stopped
    assert lines[-1] == f"Interrupted: finished runs are kept; resume with: dlbench run --resume {results}"
    assert outcomes(results) == {"01-pytorch-eager": "ok", "02-pytorch-eager": "failed",
                                 "03-pytorch-eager": "timeout", "04-pytorch-eager": "error",
                                 "05-pytorch-eager": "error"}
    assert records(results)["05-pytorch-eager"]["message"] == "interrupted"
    assert (results / "report.html").is_file() and bundle.verify(results) == []
    kept = {run_id: snapshot(results / "runs" / run_id)
            for run_id in ("01-pytorch-eager", "02-pytorch-eager", "03-pytorch-eager")}

    suite, _ = load_plan(results)
    assert pending_runs(ResultsDir(results), suite) == ["04-pytorch-eager", "05-pytorch-eager",
                                                       "06-pytorch-eager"]
    again = FakeBackend(leftovers=["container fake-05"])
    said: list[str] = []
    resume_suite(ResultsDir(results), suite, again, say=said.append)
    assert said[:2] == [f"Resuming {results}: 3 run(s) kept, 3 to run",
                        "    removed container fake-05, left running by the interrupted attempt"]
    assert again.executed() == ["04-pytorch-eager", "05-pytorch-eager", "06-pytorch-eager"]
    assert {run_id: snapshot(results / "runs" / run_id) for run_id in kept} == kept  # byte for byte
    assert outcomes(results) == {"01-pytorch-eager": "ok", "02-pytorch-eager": "failed",
                                 "03-pytorch-eager": "timeout", **{f"0{n}-pytorch-eager": "ok" for n in (4, 5, 6)}}
    summary = json.loads((results / "summary.json").read_text())
    assert [r["outcome"] for r in summary["runs"]] == ["ok", "failed", "timeout", "ok", "ok", "ok"]
    assert bundle.verify(results) == []


@pytest.mark.usefixtures("quick_report")
def test_a_full_disk_mid_suite_keeps_finished_runs_and_resume_finishes(fake, tmp_path):
    suite = load_suite(write_suite(tmp_path))
    with pytest.raises(DlbenchError) as info:
        run_suite(suite, FakeBackend({"02-pytorch-eager": "disk-full"}), tmp_path / "results",
                  say=lambda line: None)
    [results] = (tmp_path / "results").iterdir()
    assert str(info.value) == (f"{results}: cannot write results (No space left on device); finished runs "
                               f"are kept, free space and resume with: dlbench run --resume {results}")
    assert outcomes(results) == {"01-pytorch-eager": "ok"}  # the run the disk stopped has no record
    kept = snapshot(results / "runs" / "01-pytorch-eager")

    again = FakeBackend()
    resume_suite(ResultsDir(results), load_plan(results)[0], again, say=lambda line: None)
    assert again.executed() == ["02-pytorch-eager", "03-pytorch-eager"]
    assert snapshot(results / "runs" / "01-pytorch-eager") == kept
    assert set(outcomes(results).values()) == {"ok"} and bundle.verify(results) == []


# ------------------------------------------------------------------ the command line

def dlbench(*args, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("quick_report")
def test_dlbench_run_on_the_fake_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BACKEND", raising=False)
    suite = write_suite(tmp_path)
    with registered(scripted()) as fake:
        code, out, err = dlbench("run", suite, "--backend", "fake", "--results", tmp_path / "results",
                                 capsys=capsys)
    [results] = (tmp_path / "results").iterdir()
    assert (code, err) == (0, ""), out + err
    assert out.splitlines()[0] == f"Results: {results}"
    assert out.splitlines()[-2:] == [f"Report: {results / 'report.html'}", f"Bundle verified: {results}"]
    assert fake.instances[0].executed() == ["01-pytorch-eager", "02-pytorch-eager", "03-pytorch-eager"]

    with registered(scripted({"02-pytorch-eager": "killed"})):
        code, out, err = dlbench("run", suite, "--backend", "fake", "--results", tmp_path / "second",
                                 capsys=capsys)
    assert code == 1 and err == ""
    assert "1 of 3 run(s) did not finish ok (see the report)." in out.splitlines()


@pytest.mark.usefixtures("quick_report")
def test_sigterm_mid_suite_exits_130_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BACKEND", raising=False)
    with registered(scripted({"02-pytorch-eager": "sigterm"})) as fake:
        code, out, err = dlbench("run", write_suite(tmp_path), "--backend", "fake",
                                 "--results", tmp_path / "results", capsys=capsys)
    [results] = (tmp_path / "results").iterdir()
    assert (code, err) == (130, "dlbench: interrupted\n") and "Traceback" not in out
    assert out.splitlines()[-1] == f"Interrupted: finished runs are kept; resume with: dlbench run --resume {results}"
    assert fake.instances[0].calls[-1] == ("interrupt",)
    assert outcomes(results) == {"01-pytorch-eager": "ok", "02-pytorch-eager": "error"}


@pytest.mark.usefixtures("quick_report")
def test_engine_lost_mid_suite_is_one_line_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BACKEND", raising=False)
    suite = write_suite(tmp_path)
    with registered(scripted({"02-pytorch-eager": "engine-lost"})) as fake:
        code, out, err = dlbench("run", suite, "--backend", "fake", "--results", tmp_path / "results",
                                 capsys=capsys)
    [results] = (tmp_path / "results").iterdir()
    assert code == 2 and "Traceback" not in out + err
    assert err == ("dlbench: error: Fake engine stopped answering during run 02-pytorch-eager "
                   "(Connection refused); start it again; finished runs are kept, resume with: "
                   f"dlbench run --resume {results}\n")
    assert fake.instances[0].executed() == ["01-pytorch-eager", "02-pytorch-eager"]  # none after it
    lost = records(results)["02-pytorch-eager"]
    assert (lost["outcome"], lost["message"]) == (
        "error", "Fake engine stopped answering during run 02-pytorch-eager (Connection refused); start it again")
    kept = snapshot(results / "runs" / "01-pytorch-eager")

    code, out, err = dlbench("run", "--resume", results, "--backend", "local", capsys=capsys)
    assert (code, err) == (2, "dlbench: error: --backend local: "
                              f"{results} was run with the fake backend; resume it with that one\n")

    with registered(scripted(leftovers=["container fake-02"])) as fake:
        code, out, err = dlbench("run", "--resume", results, capsys=capsys)  # the engine is back
    assert (code, err) == (0, ""), out + err
    assert out.splitlines()[:2] == [f"Resuming {results}: 1 run(s) kept, 2 to run",
                                    "    removed container fake-02, left running by the interrupted attempt"]
    assert out.splitlines()[-1] == f"Bundle verified: {results}"
    assert fake.instances[0].executed() == ["02-pytorch-eager", "03-pytorch-eager"]
    assert snapshot(results / "runs" / "01-pytorch-eager") == kept
    assert set(outcomes(results).values()) == {"ok"}


@pytest.mark.usefixtures("quick_report")
def test_no_build_on_a_backend_that_builds_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BACKEND", raising=False)
    with registered(scripted()):
        code, out, err = dlbench("run", write_suite(tmp_path), "--backend", "fake", "--no-build",
                                 "--results", tmp_path / "results", capsys=capsys)
    assert (code, out, err) == (2, "", "dlbench: error: --no-build applies to the docker or slurm backend only\n")
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ rerun, through the registry

@pytest.mark.usefixtures("quick_report")
def test_rerun_asks_the_registry_for_a_backend_that_can(tmp_path, lines):
    suite = load_suite(write_suite(tmp_path, runs=2))
    with registered(scripted(reruns_recorded_images=True)) as fake:
        first = run_suite(suite, fake(), tmp_path / "first", say=lambda line: None).path
        again = rerun(first, "02-pytorch-eager", tmp_path / "again", say=lines.append).path
        assert bundle.verify(again) == []
    [backend] = [b for b in fake.instances if ("for_recorded_images", {"pytorch/cpu": "sha256:pytorch-cpu-fake"})
                 in b.calls]
    assert backend.executed() == ["02-pytorch-eager"]
    assert f"Rerunning 1 run(s) of {first.name} on the recorded images" in lines
    spec = "runs/02-pytorch-eager/spec.json"
    assert (again / spec).read_bytes() == (first / spec).read_bytes()
    assert outcomes(again) == {"02-pytorch-eager": "ok"}


@pytest.mark.usefixtures("quick_report")
def test_rerun_of_a_bundle_whose_backend_cannot_rerun(tmp_path):
    suite = load_suite(write_suite(tmp_path, runs=1))
    with registered(scripted()) as fake:
        first = run_suite(suite, fake(), tmp_path / "first", say=lambda line: None).path
        with pytest.raises(DlbenchError) as info:
            rerun(first, None, tmp_path / "again", say=lambda line: None)
    assert str(info.value) == (f"{first}: ran on the fake backend; rerun needs recorded images "
                               "(the docker backend)")
    assert not (tmp_path / "again").exists()


@pytest.mark.usefixtures("quick_report")
def test_status_of_a_suite_that_stopped_early_on_a_backend_without_jobs(fake, tmp_path, capsys):
    suite = load_suite(write_suite(tmp_path, runs=3))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, FakeBackend({"02-pytorch-eager": "interrupt"}), tmp_path / "results",
                  say=lambda line: None)
    [results] = (tmp_path / "results").iterdir()
    shutil.rmtree(results / "runs" / "03-pytorch-eager", ignore_errors=True)
    code, out, err = dlbench("status", results, capsys=capsys)
    assert (code, err) == (0, ""), err
    rows = {line.split()[0]: line for line in out.splitlines()[2:5]}
    assert "done: ok" in rows["01-pytorch-eager"]
    assert "done: error" in rows["02-pytorch-eager"]  # interrupted: --resume runs it again
    assert "not started" in rows["03-pytorch-eager"]
    assert out.splitlines()[-2:] == ["2 done, 1 not started",
                                     f"Gather, submit what is left and seal the report: dlbench run --resume {results}"]
