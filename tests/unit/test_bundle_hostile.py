"""Bundles and results directories that cannot be fooled.

1. Links never leak host files: a symbolic link (to a file, or to a directory passing for a
   run), a FIFO or a socket in a bundle is an error in one line for seal, verify, report,
   compare and pack, and is never followed or opened; the runner refuses to collect a run
   directory holding one (tests/fake_backend.py plants them as a hostile workload would).
2. A sealed bundle stays sealed: `run --resume` verifies what it keeps before adopting it,
   leaves a complete bundle byte for byte, and `pack -o` / `report -o` never write inside.
3. verify checks consistency, not only hashes: planned runs, summary.json re-derived from the
   runs, summary.csv, images.json; archives are checked member by member before extraction,
   and SIGTERM mid-extraction leaves no temporary directory.
Everything starts from tests/fixtures/bundle-small (as tests/unit/test_bundle.py does).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from orchestrator import cli, report
from orchestrator.analysis.summary import summarize
from orchestrator.cli.bundle import verified_line
from orchestrator.errors import DlbenchError
from orchestrator.execution.resume import load_plan, resume_suite
from orchestrator.execution.runner import run_suite
from orchestrator.paths import REPO_ROOT
from orchestrator.plan.suite import load_suite
from orchestrator.report import charts, compare
from orchestrator.results import bundle
from orchestrator.results.directory import ResultsDir, load_runs
from tests.fake_backend import HOST_FILE, HOST_MONITOR_FILE, FakeBackend, registered, scripted
from tests.unit.test_runner_fake_backend import outcomes, records, write_suite

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "bundle-small"
PT, TF = "01-pytorch-eager", "02-tensorflow-keras"
SECRET = "host secret: never in a bundle\n"


def copy_fixture(tmp_path: Path, name: str = "20261122-000000-small") -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURE, target)
    return target


def dlbench(*args, capsys) -> tuple[int, str, str]:
    """The real command line, in this process (subprocess where a hang or a signal matters)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_dlbench(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(result, *expected: str) -> str:
    code, out, err = result
    assert code == 2, out + err
    assert "Traceback" not in out + err
    message = err.strip()
    assert "\n" not in message and message.startswith("dlbench: error: "), message
    for text in expected:
        assert text in message, message
    return message


def rehash(path: Path, *rels: str) -> None:
    """What a forger does after editing files: rewrite their manifest lines (sha256sum style)."""
    manifest = path / bundle.MANIFEST
    lines = dict(reversed(line.split("  ", 1)) for line in manifest.read_text().splitlines())
    for rel in rels:
        if (path / rel).exists():
            lines[rel] = hashlib.sha256((path / rel).read_bytes()).hexdigest()  # follows a link, as sha256sum
        else:
            lines.pop(rel, None)
    manifest.write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(lines.items())))


def drop_run(path: Path, run_id: str) -> None:
    """Remove a run directory and its manifest lines."""
    shutil.rmtree(path / "runs" / run_id)
    manifest = path / bundle.MANIFEST
    manifest.write_text("".join(line + "\n" for line in manifest.read_text().splitlines()
                                if f"  runs/{run_id}/" not in line))


def tree(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file (bytes and mtime): 'left byte for byte'."""
    return {p.relative_to(path).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture()
def secret(tmp_path) -> Path:
    host_file = tmp_path / "host" / "secret.txt"
    host_file.parent.mkdir()
    host_file.write_text(SECRET)
    return host_file


@pytest.fixture()
def quick_report(monkeypatch):
    monkeypatch.setattr(charts, "all_charts", lambda groups, rows: [])


# ============================================================== 1. links never leak host files

@pytest.mark.parametrize("where", ["runs/01-pytorch-eager/leak.txt",        # added
                                   "runs/01-pytorch-eager/output.log",      # replacing a listed file
                                   "suite.yaml"])
def test_a_file_link_is_refused_by_seal_verify_report_compare_and_pack(tmp_path, capsys, secret, where):
    copy = copy_fixture(tmp_path)
    (copy / where).unlink(missing_ok=True)
    (copy / where).symlink_to(secret)
    rehash(copy, where)  # a forger's manifest, hashed through the link as sha256sum does
    named = f"{where}: a symbolic link (a bundle holds only regular files and directories"

    with pytest.raises(DlbenchError, match="cannot seal: " + re.escape(named)):
        bundle.seal(copy)
    code, out, err = dlbench("verify", copy, capsys=capsys)
    assert code == 1 and err == ""
    assert f"  {named}" in out.splitlines()[0] and where in out
    assert not any(line.startswith(f"  {where}: missing") or line.startswith(f"  {where}: changed")
                   for line in out.splitlines())  # named once, as what it is
    one_line_error(dlbench("report", copy, capsys=capsys), where, "a symbolic link")
    one_line_error(dlbench("compare", FIXTURE, copy, capsys=capsys), where, "a symbolic link")
    one_line_error(dlbench("pack", copy, "-o", tmp_path / "out.tar.gz", capsys=capsys), where)
    with pytest.raises(DlbenchError, match="cannot pack"):
        bundle.pack(copy, tmp_path / "direct.tar.gz")  # the function itself refuses too
    assert not (tmp_path / "out.tar.gz").exists() and not (tmp_path / "direct.tar.gz").exists()
    assert secret.read_text() == SECRET


def test_pack_never_holds_a_link_targets_content(tmp_path, secret):
    """Even a bundle whose manifest agrees with what the link points at packs nothing of it."""
    copy = copy_fixture(tmp_path)
    (copy / "notes.txt").symlink_to(secret)
    rehash(copy, "notes.txt")
    with pytest.raises(DlbenchError):
        bundle.pack(copy, tmp_path / "a.tar.gz")
    (copy / "notes.txt").unlink()
    rehash(copy, "notes.txt")
    archive = bundle.pack(copy, tmp_path / "b.tar.gz")
    assert SECRET.encode() not in gzip.decompress(archive.read_bytes())


def test_a_directory_link_under_runs_is_no_extra_run(tmp_path, capsys):
    copy = copy_fixture(tmp_path)
    outside = tmp_path / "elsewhere" / "03-pytorch-eager"
    shutil.copytree(FIXTURE / "runs" / PT, outside)  # a whole valid run, outside the bundle
    (copy / "runs" / "03-pytorch-eager").symlink_to(outside, target_is_directory=True)
    for name in ("spec.json", "run.json", "metrics.json", "output.log", "monitor.jsonl"):
        rehash(copy, f"runs/03-pytorch-eager/{name}")
    named = "runs/03-pytorch-eager: a symbolic link"

    code, out, _ = dlbench("verify", copy, capsys=capsys)
    assert code == 1 and f"  {named}" in out
    assert "runs/03-pytorch-eager/" not in out  # its content: never looked at
    with pytest.raises(DlbenchError, match=named):
        load_runs(copy)
    with pytest.raises(DlbenchError, match=named):
        report.load(copy)
    one_line_error(dlbench("report", copy, capsys=capsys), named)
    one_line_error(dlbench("compare", copy, FIXTURE, capsys=capsys), named)
    with pytest.raises(DlbenchError, match="cannot seal"):
        bundle.seal(copy)
    with pytest.raises(DlbenchError, match="cannot pack"):
        bundle.pack(copy, tmp_path / "x.tar.gz")
    (copy / "runs" / "03-pytorch-eager").unlink()
    (copy / "runs" / "links").symlink_to(tmp_path / "elsewhere")  # any name, to any directory
    with pytest.raises(DlbenchError, match="runs/links: a symbolic link"):
        compare.compare(FIXTURE, copy)


@pytest.mark.parametrize("where", ["runs/01-pytorch-eager/pipe", "runs/01-pytorch-eager/metrics.json"])
def test_a_fifo_never_hangs_verify_or_report(tmp_path, where):
    copy = copy_fixture(tmp_path)
    (copy / where).unlink(missing_ok=True)
    os.mkfifo(copy / where)
    proc = subprocess_dlbench("verify", copy, timeout=60)  # an open() of the FIFO would block
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"  {where}: a FIFO (named pipe) (a bundle holds only regular files" in proc.stdout
    proc = subprocess_dlbench("report", copy, timeout=60)
    assert proc.returncode == 2 and f"{where}: a FIFO" in proc.stderr
    with pytest.raises(DlbenchError, match="cannot seal"):
        bundle.seal(copy)


def test_a_socket_is_refused_too(tmp_path):
    copy = copy_fixture(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(copy / "runs" / PT / "s"))
        assert f"runs/{PT}/s: a socket (a bundle holds only regular files and directories; " \
               "dlbench never follows or reads it)" in bundle.verify(copy)
    finally:
        server.close()


def test_a_manifest_line_outside_the_bundle_is_never_read(tmp_path, secret):
    copy = copy_fixture(tmp_path)
    outside = os.path.relpath(secret, copy)  # ../host/secret.txt
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    with open(copy / bundle.MANIFEST, "a") as fh:
        fh.write(f"{digest}  {outside}\n{digest}  {secret}\n")
    problems = bundle.verify(copy)
    number = len((FIXTURE / bundle.MANIFEST).read_text().splitlines()) + 1
    assert f"{bundle.MANIFEST}: line {number} names a path outside the bundle ('{outside}': absolute, or with `..`)" \
        in problems
    assert any(f"names a path outside the bundle ('{secret}'" in p for p in problems)


@pytest.mark.usefixtures("quick_report")
def test_the_runner_refuses_to_collect_a_run_directory_holding_a_link_or_fifo(tmp_path):
    suite = load_suite(write_suite(tmp_path, runs=4))
    script = {"01-pytorch-eager": "link-metrics", "02-pytorch-eager": "link-dir", "03-pytorch-eager": "fifo"}
    with registered(FakeBackend):
        results = run_suite(suite, FakeBackend(script), tmp_path / "results", say=lambda line: None).path
    found = records(results)
    assert outcomes(results) == {"01-pytorch-eager": "failed", "02-pytorch-eager": "failed",
                                 "03-pytorch-eager": "failed", "04-pytorch-eager": "ok"}
    for run_id, name, what in (("01-pytorch-eager", "metrics.json", "a symbolic link"),
                               ("02-pytorch-eager", "elsewhere", "a symbolic link"),
                               ("03-pytorch-eager", "pipe", "a FIFO (named pipe)")):
        assert found[run_id]["message"] == (
            f"run directory not collected: runs/{run_id}/{name}: {what} (a bundle holds only regular "
            "files and directories; dlbench never follows or reads it); removed unread"), found[run_id]
        assert found[run_id]["metrics_valid"] is False
        assert not os.path.lexists(results / "runs" / run_id / name)
    host_file = tmp_path / "results" / HOST_FILE.format(run_id="01-pytorch-eager")
    assert host_file.is_file()  # untouched, and nowhere in the bundle
    assert host_file.name not in (results / bundle.MANIFEST).read_text()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["runs"][0]["outcome"] == "failed" and "images_per_s" not in summary["runs"][0]
    with registered(FakeBackend):  # plan.json names the fake backend
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])


@pytest.mark.usefixtures("quick_report")
def test_a_link_planted_at_monitor_jsonl_never_makes_the_host_append_to_its_target(tmp_path):
    suite = load_suite(write_suite(tmp_path, runs=2))
    with registered(FakeBackend):
        results = run_suite(suite, FakeBackend({PT: "link-monitor"}), tmp_path / "results",
                            say=lambda line: None).path
    assert outcomes(results) == {PT: "failed", "02-pytorch-eager": "ok"}
    found = records(results)
    assert found[PT]["message"] == (
        f"run directory not collected: runs/{PT}/monitor.jsonl: a symbolic link (a bundle holds "
        "only regular files and directories; dlbench never follows or reads it); removed unread")
    assert found[PT]["monitor"] is None
    host_file = tmp_path / "results" / HOST_MONITOR_FILE.format(run_id=PT)
    assert host_file.read_text() == "host file\n"  # not one sample appended
    assert not os.path.lexists(results / "runs" / PT / "monitor.jsonl")
    assert found["02-pytorch-eager"]["monitor"]["samples"] >= 1  # the others are still sampled
    with registered(FakeBackend):
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])


# ============================================================== 2. a sealed bundle stays sealed

def finished_suite(tmp_path: Path, script: dict | None = None, runs: int = 3) -> Path:
    suite = load_suite(write_suite(tmp_path, runs=runs))
    with registered(FakeBackend):
        try:
            return run_suite(suite, FakeBackend(script or {}), tmp_path / "results",
                             say=lambda line: None).path
        except (KeyboardInterrupt, DlbenchError):
            [results] = (tmp_path / "results").iterdir()
            return results


@pytest.mark.usefixtures("quick_report")
def test_resume_of_a_complete_bundle_leaves_every_byte(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BACKEND", raising=False)
    results = finished_suite(tmp_path)
    before = tree(results)
    with registered(scripted()) as fake:
        code, out, err = dlbench("run", "--resume", results, capsys=capsys)
    assert (code, err) == (0, ""), out + err
    assert f"Nothing to resume: every run planned in {results} has an outcome and the bundle is sealed; " \
           "it is left as it is, byte for byte" in out.splitlines()
    assert tree(results) == before  # bytes and mtimes
    assert fake.instances[0].executed() == [] and ("preflight", "fake") not in fake.instances[0].calls


@pytest.mark.usefixtures("quick_report")
def test_resume_of_a_complete_directory_never_sealed_seals_it(tmp_path):
    """Every run has its outcome but the seal never came (the process was killed while
    rendering): resume runs nothing, keeps every run byte for byte, renders and seals."""
    results = finished_suite(tmp_path)
    (results / bundle.MANIFEST).unlink()
    (results / "report.html").write_text("<p>half a report</p>")
    runs = {rel: data for rel, data in tree(results).items() if rel.startswith("runs/")}
    said: list[str] = []
    again = FakeBackend()
    with registered(FakeBackend):
        resume_suite(ResultsDir(results), load_plan(results)[0], again, say=said.append)
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])
    assert again.executed() == [] and f"Resuming {results}: 3 run(s) kept, 0 to run" in said
    assert {rel: data for rel, data in tree(results).items() if rel.startswith("runs/")} == runs


@pytest.mark.usefixtures("quick_report")
@pytest.mark.parametrize("state", ["complete", "interrupted"])
@pytest.mark.parametrize("tamper", ["metrics", "manifest-rehashed-schema", "added-file", "link", "images"])
def test_resume_refuses_to_adopt_what_does_not_verify(tmp_path, capsys, monkeypatch, state, tamper, secret):
    monkeypatch.delenv("BACKEND", raising=False)
    results = finished_suite(tmp_path, {"03-pytorch-eager": "interrupt"} if state == "interrupted" else {})
    kept = results / "runs" / "01-pytorch-eager"
    if tamper == "metrics":
        metrics = json.loads((kept / "metrics.json").read_text())
        metrics["timing"]["images_per_s"] *= 10
        (kept / "metrics.json").write_text(json.dumps(metrics))
        expected = "runs/01-pytorch-eager/metrics.json: changed"
    elif tamper == "manifest-rehashed-schema":
        record = json.loads((kept / "run.json").read_text())
        record["outcome"] = "splendid"
        (kept / "run.json").write_text(json.dumps(record))
        rehash(results, "runs/01-pytorch-eager/run.json")
        expected = "runs/01-pytorch-eager/run.json: does not match the run schema"
    elif tamper == "added-file":
        (results / "notes.txt").write_text("adopted into the next seal?")
        expected = "notes.txt: added (not listed in MANIFEST.sha256)"
    elif tamper == "link":
        (kept / "output.log").unlink()
        (kept / "output.log").symlink_to(secret)
        expected = "runs/01-pytorch-eager/output.log: a symbolic link"
    else:
        images = json.loads((results / "images.json").read_text())
        images["pytorch/cpu"]["tag"] = "somebody/else:latest"
        (results / "images.json").write_text(json.dumps(images))
        expected = "images.json: changed"
    before = tree(results)
    with registered(scripted()) as fake:
        message = one_line_error(dlbench("run", "--resume", results, capsys=capsys), expected)
    assert message.startswith(f"dlbench: error: {results}: cannot resume: ")
    assert message.endswith("resume adopts only files that verify, so run the suite again into a new "
                            "directory (dlbench run SUITE.yaml)")
    assert tree(results) == before and fake.instances[0].executed() == []
    assert secret.read_text() == SECRET


@pytest.mark.usefixtures("quick_report")
def test_resume_after_an_interruption_ignores_what_it_throws_away_or_rewrites(tmp_path, secret):
    """Sealed on interrupt: the pending runs' directories are emptied and the summary, report
    and manifest re-rendered, so tampering there is not adopted; it is simply replaced."""
    results = finished_suite(tmp_path, {"02-pytorch-eager": "interrupt"})
    (results / "runs" / "02-pytorch-eager" / "leak").symlink_to(secret)  # inside a pending run
    (results / "summary.json").write_text('{"made": "up"}')
    (results / "report.html").write_text("<p>made up</p>")
    kept = (results / "runs" / "01-pytorch-eager" / "metrics.json").read_bytes()
    again = FakeBackend()
    with registered(FakeBackend):
        resume_suite(ResultsDir(results), load_plan(results)[0], again, say=lambda line: None)
    assert again.executed() == ["02-pytorch-eager", "03-pytorch-eager"]
    assert (results / "runs" / "01-pytorch-eager" / "metrics.json").read_bytes() == kept
    assert secret.read_text() == SECRET and not os.path.lexists(results / "runs" / "02-pytorch-eager" / "leak")
    with registered(FakeBackend):  # plan.json names the fake backend
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])


@pytest.mark.usefixtures("quick_report")
def test_resume_of_a_directory_never_sealed_checks_schemas_and_links(tmp_path, secret):
    """A full disk stops a suite before its seal: no manifest to check the kept runs against,
    so they meet their schemas; a link is refused all the same."""
    results = finished_suite(tmp_path, {"02-pytorch-eager": "disk-full"})
    assert not (results / bundle.MANIFEST).exists()
    record = results / "runs" / "01-pytorch-eager" / "run.json"
    good = record.read_bytes()
    record.write_text(json.dumps({**json.loads(good), "outcome": "splendid"}))
    with registered(FakeBackend), pytest.raises(DlbenchError, match="runs/01-pytorch-eager/run.json: does not match the run schema"):
        resume_suite(ResultsDir(results), load_plan(results)[0], FakeBackend(), say=lambda line: None)
    record.write_bytes(good)
    (results / "runs" / "01-pytorch-eager" / "extra").symlink_to(secret)
    with registered(FakeBackend), pytest.raises(DlbenchError, match="runs/01-pytorch-eager/extra: a symbolic link"):
        resume_suite(ResultsDir(results), load_plan(results)[0], FakeBackend(), say=lambda line: None)
    (results / "runs" / "01-pytorch-eager" / "extra").unlink()

    said: list[str] = []
    with registered(FakeBackend):
        resume_suite(ResultsDir(results), load_plan(results)[0], FakeBackend(), say=said.append)
    assert said[0] == (f"{results} was never sealed: the runs kept are checked against their schemas only "
                       "(there is no MANIFEST.sha256 to check them against)")
    assert set(outcomes(results).values()) == {"ok"}
    with registered(FakeBackend):  # plan.json names the fake backend
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])


@pytest.mark.usefixtures("quick_report")
def test_a_resume_that_dies_unsealed_leaves_no_stale_manifest(tmp_path):
    """Sealed on interrupt, then a resume stopped by a full disk (no seal): the manifest it
    found was removed before anything changed, so the next resume finds a directory never
    sealed, not a manifest that disagrees with the runs the failed attempt finished."""
    results = finished_suite(tmp_path, {"02-pytorch-eager": "interrupt"}, runs=4)
    with registered(FakeBackend), pytest.raises(DlbenchError, match="cannot write results"):
        resume_suite(ResultsDir(results), load_plan(results)[0], FakeBackend({"03-pytorch-eager": "disk-full"}),
                     say=lambda line: None)
    assert not (results / bundle.MANIFEST).exists()
    assert outcomes(results) == {"01-pytorch-eager": "ok", "02-pytorch-eager": "ok"}
    again = FakeBackend()
    with registered(FakeBackend):
        resume_suite(ResultsDir(results), load_plan(results)[0], again, say=lambda line: None)
    assert again.executed() == ["03-pytorch-eager", "04-pytorch-eager"]
    with registered(FakeBackend):  # plan.json names the fake backend
        assert verified_line(results) == (0, [f"Bundle verified: {results}"])


def test_pack_and_report_never_write_inside_a_sealed_bundle(tmp_path, capsys):
    copy = copy_fixture(tmp_path)
    (tmp_path / "into").symlink_to(copy / "runs", target_is_directory=True)
    before = tree(copy)
    for output in (copy / "x.tar.gz", copy / "runs" / ".." / "y.tar.gz", tmp_path / "into" / "z.tar.gz", copy):
        one_line_error(dlbench("pack", copy, "-o", output, capsys=capsys),
                       f"{output}: inside the bundle {copy}, which packing must not change")
        with pytest.raises(DlbenchError, match="inside the bundle"):
            bundle.pack(copy, output)
    one_line_error(dlbench("report", copy, "-o", copy / "r.html", capsys=capsys),
                   f"{copy / 'r.html'}: inside the sealed bundle {copy}, which must not change")
    assert tree(copy) == before and bundle.verify(copy) == []


# ============================================================== 3. consistency, not only hashes

def test_a_good_bundle_verifies_with_the_same_output_as_before(tmp_path, capsys):
    assert verified_line(FIXTURE) == (0, [f"Bundle verified: {FIXTURE}"])
    code, out, err = dlbench("verify", FIXTURE, capsys=capsys)
    assert (code, out, err) == (0, f"Bundle verified: {FIXTURE}\n", "")


def test_a_run_removed_with_its_manifest_lines_is_caught(tmp_path, capsys):
    copy = copy_fixture(tmp_path)
    drop_run(copy, TF)
    assert bundle.verify(copy) == []  # the manifest agrees with what is left ...
    code, out, _ = dlbench("verify", copy, capsys=capsys)
    assert code == 1  # ... but the plan and the summary still name the run
    assert f"  runs/{TF}: planned (plan.json runs[1]) but the bundle has no run directory for it: removed, " \
           "or the suite stopped before it (dlbench run --resume finishes a results directory)" in out
    assert f"  summary.json: runs[1] is run {TF}, which has no run directory" in out


def test_a_run_removed_by_a_thorough_forger_is_still_caught(tmp_path):
    """Summary, CSV and report re-made without the run and re-hashed: the plan still lists it."""
    copy = copy_fixture(tmp_path)
    drop_run(copy, TF)
    summary = summarize(load_runs(copy), 0.1)
    (copy / "summary.json").write_text(json.dumps(summary))
    (copy / "summary.csv").write_text(bundle.summary_csv(summary))
    rehash(copy, "summary.json", "summary.csv")
    code, lines = verified_line(copy)
    assert code == 1 and lines[0].startswith(f"  runs/{TF}: planned (plan.json runs[1])") and len(lines) == 2


def test_an_extra_run_directory_is_caught(tmp_path):
    copy = copy_fixture(tmp_path)
    shutil.copytree(copy / "runs" / PT, copy / "runs" / "03-pytorch-eager")
    rehash(copy, *(f"runs/03-pytorch-eager/{p.name}" for p in (copy / "runs" / PT).iterdir()))
    code, lines = verified_line(copy)
    assert code == 1
    assert "  runs/03-pytorch-eager: not a run plan.json lists (added after the suite was planned)" in lines
    assert "  summary.json: runs: no entry for run 03-pytorch-eager (runs/03-pytorch-eager is there)" in lines


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["runs"][0].update(images_per_s=4798.3), "summary.json: runs[0].images_per_s (01-pytorch-eager): "
     "records 4798.3, the runs' files give 479.83341390962784"),
    (lambda s: s["runs"][1].update(outcome="failed"), "summary.json: runs[1].outcome (02-tensorflow-keras): "
     "records 'failed', the runs' files give 'ok'"),
    (lambda s: s["runs"][0].update(speedup=9.0), "summary.json: runs[0].speedup (01-pytorch-eager): records 9.0, "
     "which the runs' files do not give"),
    (lambda s: s["statistics"]["groups"][0]["metrics"]["images_per_s"].update(median=1.0),
     "summary.json: statistics.groups[0].metrics.images_per_s.median: records 1.0, the runs' files give "
     "479.83341390962784"),
])
def test_summary_json_edited_and_rehashed_is_caught_by_re_deriving_it(tmp_path, edit, expected):
    copy = copy_fixture(tmp_path)
    summary = json.loads((copy / "summary.json").read_text())
    edit(summary)
    (copy / "summary.json").write_text(json.dumps(summary, indent=2))
    (copy / "summary.csv").write_text(bundle.summary_csv(summary))  # consistently, too
    rehash(copy, "summary.json", "summary.csv")
    assert bundle.verify(copy) == []  # hashes and schemas agree
    code, lines = verified_line(copy)
    assert code == 1 and lines[:-1] == [f"  {expected}"], lines


def test_summary_csv_edited_and_rehashed_is_caught(tmp_path):
    copy = copy_fixture(tmp_path)
    text = (copy / "summary.csv").read_text().replace("479.83341390962784", "4798.3341390962784")
    (copy / "summary.csv").write_text(text)
    rehash(copy, "summary.csv")
    code, lines = verified_line(copy)
    assert code == 1 and lines[:-1] == [
        "  summary.csv: line 2 (01-pytorch-eager), column images_per_s: '4798.3341390962784', summary.json "
        "has 479.83341390962784"], lines


def test_images_json_missing_an_image_is_caught(tmp_path):
    copy = copy_fixture(tmp_path)
    images = json.loads((copy / "images.json").read_text())
    del images["tensorflow/cpu"]
    (copy / "images.json").write_text(json.dumps(images, indent=2))
    rehash(copy, "images.json")
    code, lines = verified_line(copy)
    record = json.loads((copy / "runs" / TF / "run.json").read_text())
    assert code == 1 and lines[:-1] == [
        f"  images.json: describes no environment matching the one runs/{TF}/run.json names "
        f"(environment.id {record['environment']['id']})"]


def test_a_sealed_file_removed_with_its_line_is_caught(tmp_path):
    copy = copy_fixture(tmp_path)
    (copy / "report.html").unlink()
    rehash(copy, "report.html")
    assert verified_line(copy)[1][:-1] == ["  report.html: missing (every sealed bundle has it)"]


def test_a_changed_file_is_named_once_not_again_by_the_consistency_checks(tmp_path):
    copy = copy_fixture(tmp_path)
    metrics = json.loads((copy / "runs" / PT / "metrics.json").read_text())
    metrics["timing"]["images_per_s"] = 1.0
    (copy / "runs" / PT / "metrics.json").write_text(json.dumps(metrics))
    assert verified_line(copy)[1][:-1] == [f"  runs/{PT}/metrics.json: changed (its sha256 differs from the "
                                           "one MANIFEST.sha256 records: the file or that line of the "
                                           "manifest was edited)"]


# -------------------------------------------------------------- archives

def archive_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue())


def member(name: str, kind=tarfile.REGTYPE, data: bytes = b"x", linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("bad, expected", [
    (member("/etc/evil"), "member '/etc/evil': a name outside the archive's directory (absolute, or with `..`)"),
    (member("b/../../evil"), "member 'b/../../evil': a name outside the archive's directory"),
    (member("b/runs/x/metrics.json", tarfile.SYMTYPE, linkname="/etc/passwd"),
     "member 'b/runs/x/metrics.json': a symbolic link (a bundle archive holds only regular files and directories)"),
    (member("b/leak", tarfile.SYMTYPE, linkname="suite.yaml"), "member 'b/leak': a symbolic link"),
    (member("b/hard", tarfile.LNKTYPE, linkname="b/suite.yaml"), "member 'b/hard': a hard link"),
    (member("b/dev", tarfile.CHRTYPE), "member 'b/dev': a device"),
    (member("b/pipe", tarfile.FIFOTYPE), "member 'b/pipe': a FIFO"),
    (member("b/suite.yaml"), "member 'b/suite.yaml': appears twice"),
])
def test_archive_members_are_checked_before_anything_is_extracted(tmp_path, capsys, bad, expected, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(archive_of([member("b", tarfile.DIRTYPE), member("b/suite.yaml"), bad]))
    for command in ("verify", "report", "compare"):
        args = (archive, FIXTURE) if command == "compare" else (archive,)
        one_line_error(dlbench(command, *args, capsys=capsys), f"{archive}: {expected}", "nothing was extracted")
    assert list(scratch.iterdir()) == [] and not Path("/etc/evil").exists()


def test_an_archive_that_would_expand_past_the_limit_is_refused_from_its_headers(tmp_path, capsys):
    big = tarfile.TarInfo("b/huge.bin")
    big.size = bundle.MAX_ARCHIVE_BYTES + 1   # declared: only the header and a little data follow
    header = tarfile.TarInfo("b")
    header.type = tarfile.DIRTYPE
    raw = header.tobuf(tarfile.GNU_FORMAT) + big.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 20)
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(raw))
    one_line_error(dlbench("verify", archive, capsys=capsys),
                   f"{archive}: expands to more than 2 GiB (the most a bundle archive may); nothing was extracted")


def test_an_archive_with_too_many_members_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_ARCHIVE_MEMBERS", 5)
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(archive_of([member("b", tarfile.DIRTYPE), *(member(f"b/{n}") for n in range(5))]))
    with pytest.raises(DlbenchError, match="more than 5 members, more than a bundle archive may hold"), \
            bundle.opened(archive):
        pass


def write_large_archive(path: Path, files: int, size: int) -> None:
    """The fixture bundle plus `files` members of `size` zero bytes (compresses to little)."""
    class Zeros(io.RawIOBase):
        def __init__(self, left):
            self.left = left

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    with tarfile.open(path, mode="w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tar:
        tar.add(FIXTURE, arcname="large")
        for n in range(files):
            info = tarfile.TarInfo(f"large/runs/{PT}/filler-{n:03d}.bin")
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros(size)))


def default_sigint() -> None:
    """A test runner started in the background inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: give the child Ctrl-C as a terminal would."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_partly_extracted_archive_is_removed_on_sigterm_as_on_sigint(tmp_path, stop):
    files, size = 48, 8 * 2**20
    archive = tmp_path / "large.tar.gz"
    write_large_archive(archive, files, size)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "verify", str(archive)], cwd=REPO_ROOT,
                            env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    extracted: list[Path] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        extracted = list(scratch.glob(f"dlbench-bundle-*/large/runs/{PT}/filler-*.bin"))
        if extracted:
            break
        time.sleep(0.005)
    assert extracted and proc.poll() is None, "extraction never started"
    proc.send_signal(stop)  # while it extracts: one member of many is there
    out, err = proc.communicate(timeout=120)
    assert len(extracted) < files  # it was stopped mid-extraction
    assert (proc.returncode, err) == (130, "dlbench: interrupted\n"), out + err
    assert list(scratch.iterdir()) == []
