"""Bundles: verify, pack determinism, offline report byte-identity, compare.

Everything starts from tests/fixtures/bundle-small, a bundle a real suite run
produced (see tests/fixtures/README.md). Tests work on copies; generated data
appears only where the fixture cannot show a case (repeats, a batch sweep).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.paths import REPO_ROOT
from orchestrator.report import compare
from orchestrator.results import bundle

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bundle-small"
RUN_IDS = ("01-pytorch-eager", "02-tensorflow-keras")


def dlbench(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def copy_fixture(tmp_path: Path, name: str = "20261122-000000-small") -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURE, target)
    return target


def reseal(path: Path) -> None:
    """What the runner's last step does: render the report, then seal (summary.csv + manifest)."""
    (path / "report.html").write_text(report.render(report.load(path)), encoding="utf-8")
    bundle.seal(path)


def test_fixture_bundle_verifies_and_holds_both_frameworks():
    assert bundle.verify(FIXTURE) == []
    listed = (FIXTURE / bundle.MANIFEST).read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in listed] == bundle.bundle_files(FIXTURE)
    for run_id in RUN_IDS:
        for name in ("spec.json", "metrics.json", "run.json", "output.log"):
            assert (FIXTURE / "runs" / run_id / name).is_file()
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 1_000_000


@pytest.mark.parametrize("rel", sorted(p.relative_to(FIXTURE).as_posix()
                                       for p in FIXTURE.rglob("*") if p.is_file()))
def test_editing_any_byte_of_any_file_fails_verify_naming_it(tmp_path, rel):
    copy = copy_fixture(tmp_path)
    target = copy / rel
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    problems = bundle.verify(copy)
    # An edited manifest line makes the file it lists disagree with it: both are named.
    assert any(p.startswith(f"{rel}:") or (rel == bundle.MANIFEST and rel in p)
               for p in problems), problems


def test_verify_cli_names_missing_added_and_changed_files(tmp_path):
    copy = copy_fixture(tmp_path)
    (copy / "runs" / "01-pytorch-eager" / "output.log").unlink()
    (copy / "notes.txt").write_text("added after sealing")
    with open(copy / "summary.csv", "a") as fh:
        fh.write("x\n")
    proc = dlbench("verify", copy)
    assert proc.returncode == 1
    assert "runs/01-pytorch-eager/output.log: missing" in proc.stdout
    assert "notes.txt: added" in proc.stdout
    assert "summary.csv: changed" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("Bundle does NOT verify")


def test_verify_checks_schemas_even_with_a_consistent_manifest(tmp_path):
    copy = copy_fixture(tmp_path)
    record = json.loads((copy / "runs" / "01-pytorch-eager" / "run.json").read_text())
    record["outcome"] = "splendid"
    (copy / "runs" / "01-pytorch-eager" / "run.json").write_text(json.dumps(record))
    bundle.write_manifest(copy)  # a forger re-hashing: the schema still catches it
    problems = bundle.verify(copy)
    assert len(problems) == 1 and problems[0].startswith("runs/01-pytorch-eager/run.json: does not match")


def test_unsealed_directory_and_bad_paths_are_one_line_errors(tmp_path):
    copy = copy_fixture(tmp_path)
    (copy / bundle.MANIFEST).unlink()
    assert bundle.verify(copy) == [f"{bundle.MANIFEST}: missing (the bundle was never sealed; "
                                   "a suite run writes it last)"]
    proc = dlbench("verify", tmp_path / "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"dlbench: error: {tmp_path / 'nope'}: no such bundle (give a results directory or its .tar.gz)"]


def test_summary_csv_is_summary_json_flattened():
    summary = json.loads((FIXTURE / "summary.json").read_text())
    lines = (FIXTURE / "summary.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["run_id", "outcome", "backend"] and "images_per_s" in header
    assert [line.split(",")[0] for line in lines[1:]] == [r["run_id"] for r in summary["runs"]]
    column = header.index("images_per_s")
    assert float(lines[1].split(",")[column]) == summary["runs"][0]["images_per_s"]


def test_pack_is_byte_reproducible_and_verifies(tmp_path):
    copy = copy_fixture(tmp_path)
    first = bundle.pack(copy, tmp_path / "first.tar.gz")
    for path in copy.rglob("*"):  # what a copy on another machine changes: times and modes
        os.utime(path, (1_000_000_000, 1_000_000_000))
        path.chmod(0o700 if path.is_dir() else 0o600)
    proc = dlbench("pack", copy)
    assert proc.returncode == 0, proc.stderr
    second = copy.with_name(copy.name + ".tar.gz")
    assert f"Packed: {second}" in proc.stdout
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(second) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == copy.name and all(n.startswith(copy.name) for n in names)
    assert names == sorted(names, key=lambda n: Path(n).parts)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    assert bundle.verify(copy) == []
    proc = dlbench("verify", second)
    assert proc.returncode == 0 and proc.stdout.strip() == f"Bundle verified: {second}"


def test_report_from_targz_is_byte_identical_to_the_bundles_own(tmp_path):
    copy = copy_fixture(tmp_path)
    reseal(copy)  # the report as this version renders it, sealed like a real run's
    archive = bundle.pack(copy)
    out = tmp_path / "again.html"
    proc = dlbench("report", archive, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "Byte-identical to the report in the bundle." in proc.stdout
    assert out.read_bytes() == (copy / "report.html").read_bytes()
    renamed = copy.rename(tmp_path / "published-elsewhere")  # the directory name is not content
    assert report.render(report.load(renamed)).encode() == out.read_bytes()


def test_report_leaves_a_sealed_bundle_untouched(tmp_path):
    copy = copy_fixture(tmp_path)
    proc = dlbench("report", copy)
    assert proc.returncode == 0, proc.stderr
    assert f"Report: {tmp_path / (copy.name + '.report.html')}" in proc.stdout
    assert bundle.verify(copy) == []


def test_report_has_the_charts_and_environment_and_escapes(tmp_path):
    copy = copy_fixture(tmp_path)
    html = report.render(report.load(copy))
    for chart in ("throughput", "convergence", "time-vs-code", "monitor"):
        assert f'id="figure-{chart}"' in html and f'id="chart-{chart}"' in html
    assert "<?xml" not in html and "http://" not in html.replace("http://www.w3.org/", "")
    for text in ("Image size", "Options in force", "Lines of code", "dlbench/pytorch:2.13.0-cpu"):
        assert text in html
    for monitor in copy.glob("runs/*/monitor.jsonl"):  # no monitor: that chart simply goes
        monitor.unlink()
    record = json.loads((copy / "runs" / "02-tensorflow-keras" / "run.json").read_text())
    record.update(outcome="failed", message="<img src=x onerror=alert(1)>")
    (copy / "runs" / "02-tensorflow-keras" / "run.json").write_text(json.dumps(record))
    html = report.render(report.load(copy))
    assert 'id="figure-monitor"' not in html and 'id="figure-throughput"' in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "dlbench rerun BUNDLE --run 02-tensorflow-keras" in html


def with_repeats(tmp_path: Path, name: str, throughputs: dict[str, list[float]],
                 batch_size: int | None = None) -> Path:
    """A bundle whose runs repeat the fixture's real runs with the given throughputs
    (generated: the fixture has no repeats and one batch size)."""
    path = copy_fixture(tmp_path, name)
    for run_id, values in throughputs.items():
        source = path / "runs" / run_id
        for index, value in enumerate(values, start=1):
            target = path / "runs" / f"{run_id}-r{index}"
            shutil.copytree(source, target)
            rate, repeat, new_id = value, index - 1, f"{run_id}-r{index}"
            for file, update in (("metrics.json", lambda d, rate=rate: d["timing"].update(
                                    images_per_s=rate, train_total_s=512 / rate)),
                                 ("spec.json", lambda d, repeat=repeat: d.update(repeat=repeat)),
                                 ("run.json", lambda d, new_id=new_id: d.update(run_id=new_id))):
                doc = json.loads((target / file).read_text())
                update(doc)
                if batch_size and file == "spec.json":
                    doc["batch_size"] = batch_size
                (target / file).write_text(json.dumps(doc))
        shutil.rmtree(source)
    return path


def test_compare_gives_ratios_and_welch_significance(tmp_path):
    a = with_repeats(tmp_path, "a", {"01-pytorch-eager": [1000, 1010, 990],
                                     "02-tensorflow-keras": [2000, 2100, 1900]})
    b = with_repeats(tmp_path, "b", {"01-pytorch-eager": [2000, 2020, 1980],
                                     "02-tensorflow-keras": [1500, 2500, 2000]})
    result = compare.compare(a, b)
    assert [m.a.key for m in result.matches] == list(RUN_IDS)
    throughput = {m.a.key: next(mc for mc in m.metrics if mc.metric == "images_per_s")
                  for m in result.matches}
    pt, tf = throughput["01-pytorch-eager"], throughput["02-tensorflow-keras"]
    assert pt.ratio == pytest.approx(2.0) and pt.significant and pt.verdict == "B better"
    assert pt.p < 0.001
    assert tf.ratio == pytest.approx(1.0) and tf.significant is False
    train = next(mc for mc in result.matches[0].metrics if mc.metric == "train_total_s")
    assert train.ratio == pytest.approx(0.5, rel=0.01) and train.verdict == "B better"
    archive = bundle.pack(b)  # .tar.gz and directories alike
    html = tmp_path / "cmp.html"
    proc = dlbench("compare", a, archive, "--html", html)
    assert proc.returncode == 0, proc.stderr
    assert "01-pytorch-eager" in proc.stdout and "2.000" in proc.stdout and "B better" in proc.stdout
    assert "no significant difference" in proc.stdout
    page = html.read_text()
    assert "B better" in page and "<script" not in page


def test_compare_single_runs_have_no_test_and_unmatched_runs_are_listed(tmp_path):
    a = copy_fixture(tmp_path, "a")
    b = copy_fixture(tmp_path, "b")
    shutil.rmtree(b / "runs" / "02-tensorflow-keras")
    result = compare.compare(a, b)
    assert [m.a.key for m in result.matches] == ["01-pytorch-eager"]
    assert all(mc.ratio == 1.0 and mc.significant is None for mc in result.matches[0].metrics)
    assert [g.key for g in result.only_a] == ["02-tensorflow-keras"]
    assert "only in A: 02-tensorflow-keras" in compare.format_text(result)


def test_charts_show_whiskers_with_repeats_and_a_batch_sweep(tmp_path):
    a = with_repeats(tmp_path, "a", {"01-pytorch-eager": [1000, 1010, 990]}, batch_size=64)
    html = report.render(report.load(a))
    assert "whiskers: 95% t-interval" in html
    assert 'id="figure-batch-sweep"' in html  # 64 for pytorch, 128 for tensorflow
