"""`dlbench site`: one static site over bundles from several machines.

Every bundle starts from tests/fixtures/bundle-small, a bundle a real suite run recorded
on this project's development machine (AMD EPYC, 2 cores, no GPU; see
tests/fixtures/README.md). The second machine is a RECORDED VARIANT: a copy of that
bundle whose system.json says another host (GPUs, driver), re-sealed with
orchestrator.results.bundle.seal, so it verifies like a bundle that machine made. Repeats
and hostile names are generated the same way, where the fixture cannot show them.
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
from orchestrator.analysis.summary import summarize
from orchestrator.errors import DlbenchError
from orchestrator.paths import REPO_ROOT
from orchestrator.report import site
from orchestrator.report.site import bundles, output
from orchestrator.results import bundle
from orchestrator.results.directory import load_runs

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bundle-small"
RUN_IDS = ("01-pytorch-eager", "02-tensorflow-keras")
# The recorded variant's host: what sysinfo writes for a two-GPU machine.
GPU_HOST = {"model": "Intel(R) Xeon(R) Platinum 8480+", "logical_cores": 224, "physical_cores": 112}
GPU_BOARD = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559, "driver": "550.54.15",
             "cuda_driver": "12.4"}
HOSTILE = "<script>alert(1)</script>"


def dlbench(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)


def _edit(path: Path, update) -> None:
    document = json.loads(path.read_text())
    update(document)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def reseal(path: Path) -> None:
    """What a suite run's last steps do: summary.json from the runs, the report, the seal."""
    plan = json.loads((path / "plan.json").read_text())
    threshold = (plan.get("statistics") or {}).get("cv_threshold")
    (path / "summary.json").write_text(json.dumps(summarize(load_runs(path), threshold), indent=2,
                                                  sort_keys=True) + "\n")
    (path / "report.html").write_text(report.render(report.load(path)), encoding="utf-8")
    bundle.seal(path)


def recorded(tmp_path: Path, name: str, gpus: int = 0, suite: str | None = None,
             throughputs: dict[str, list[float]] | None = None, options: dict | None = None) -> Path:
    """The fixture as `name`; with gpus > 0, the recorded variant from the GPU host above.
    throughputs: each run repeated with these images/s (run ids -r1, -r2, ...)."""
    path = tmp_path / name
    shutil.copytree(FIXTURE, path)
    if gpus:
        _edit(path / "system.json", lambda s: s.update(
            cpu={**s["cpu"], **GPU_HOST}, gpus=[{**GPU_BOARD, "index": i} for i in range(gpus)]))
    if suite is not None:
        _edit(path / "plan.json", lambda p: p.update(suite=suite))
    if options is not None:
        for run_id in RUN_IDS:
            _edit(path / "runs" / run_id / "spec.json", lambda s: s.update(options=options))
        _edit(path / "plan.json", lambda p: [r["spec"].update(options=options) for r in p["runs"]])
    for run_id, values in (throughputs or {}).items():
        _repeat(path, run_id, values)
    reseal(path)
    assert bundle.verify(path) == []
    return path


def _repeat(path: Path, run_id: str, values: list[float]) -> None:
    source = path / "runs" / run_id
    plan = json.loads((path / "plan.json").read_text())
    planned = next(r for r in plan["runs"] if r["run_id"] == run_id)
    plan["runs"].remove(planned)
    for index, rate in enumerate(values, start=1):
        new_id = f"{run_id}-r{index}"
        target = path / "runs" / new_id
        shutil.copytree(source, target)
        _edit(target / "metrics.json", lambda m, rate=rate, new_id=new_id: (
            m["timing"].update(images_per_s=rate, train_total_s=512 / rate), m.update(run_id=new_id),
            m.update(steady_state={"window_steps": 2, "windows": 3, "images_per_s_median": rate * 1.25,
                                   "images_per_s_cv": 0.01})))
        _edit(target / "spec.json", lambda s, i=index, new_id=new_id: s.update(repeat=i - 1, run_id=new_id))
        _edit(target / "run.json", lambda r, new_id=new_id: r.update(run_id=new_id))
        entry = json.loads(json.dumps(planned))
        entry["run_id"] = entry["spec"]["run_id"] = new_id
        entry["spec"]["repeat"] = index - 1
        plan["runs"].append(entry)
    shutil.rmtree(source)
    (path / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def pages_text(root: Path) -> str:
    return "\n".join(data.decode("utf-8") for rel, data in files_of(root).items() if rel.endswith(".html"))


# ---------------------------------------------------------------------------

def test_same_bundles_make_the_same_bytes_whatever_the_order_and_form(tmp_path):
    a = recorded(tmp_path, "20261122-000000-small")
    b = recorded(tmp_path, "20261123-000000-small-h100", gpus=2)
    archive = bundle.pack(b)
    first = site.build([a, b], tmp_path / "site-1").path
    moved = shutil.copytree(a, tmp_path / "elsewhere" / a.name)  # where a bundle lies is not content
    second = site.build([archive, moved], tmp_path / "site-2").path
    assert files_of(first) == files_of(second)
    assert sorted(files_of(first)) == sorted([
        ".dlbench-site", "index.html", "machines.html", "workloads/mnist-cnn-39f3bb32.html",
        *(f"bundles/{bundles.slugify(p.name)}-{bundles.content_digest(p)[:10]}/{page}"
          for p in (a, b) for page in ("index.html", "report.html"))])
    text = pages_text(first)
    assert str(tmp_path) not in text and "/tmp/" not in text  # no location, no temporary directory
    # each bundle's report is its own, byte for byte (rendered again, never copied)
    slug = f"{bundles.slugify(a.name)}-{bundles.content_digest(a)[:10]}"
    assert (first / "bundles" / slug / "report.html").read_bytes() == (a / "report.html").read_bytes()


def test_two_recorded_machines_get_a_leaderboard_and_a_ratio(tmp_path):
    # the second machine is a recorded variant of the fixture (see the module docstring)
    a = recorded(tmp_path, "epyc", throughputs={"01-pytorch-eager": [1000, 1010, 990]})
    b = recorded(tmp_path, "h100", gpus=2, throughputs={"01-pytorch-eager": [2000, 2020, 1980]})
    built = site.build([b, a], tmp_path / "site")
    assert [m.machine.label for m in built.machines] == [
        "2× NVIDIA H100 80GB HBM3 (driver 550.54.15) · Intel(R) Xeon(R) Platinum 8480+, 224 cores",
        "AMD EPYC, 2 cores"]
    assert all(b.trusted and b.signer_text == "unsigned" for b in built.bundles)
    (board,) = built.leaderboards
    ranked = [(e.machine.cpu, e.group.framework, e.mean("images_per_s")) for e in board.ranked]
    assert ranked[0] == (GPU_HOST["model"], "pytorch", pytest.approx(2000))
    assert ranked[1][:2] == ("Intel(R) Xeon(R) Platinum 8480+", "tensorflow")
    pytorch = next(e for e in board.ranked if e.group.framework == "pytorch" and e.machine.cpu == "AMD EPYC")
    low, high = pytorch.figures["images_per_s"]["ci95"]
    assert low < 1000 < high and pytorch.figures["images_per_s"]["n"] == 3
    (pair,) = site.views.machine_pairs(built.machines)
    assert [row.a.group.framework for row in pair.rows] == ["pytorch", "tensorflow"]
    ratio, steady = pair.rows[0].ratios  # repeats with steady-state windows: both figures
    assert ratio.metric == "images_per_s" and ratio.ratio == pytest.approx(0.5) and ratio.p < 0.001
    assert ratio.verdict == "A better"
    assert steady.metric == "steady_images_per_s" and steady.mean_a == pytest.approx(2500)
    assert [r.metric for r in pair.rows[1].ratios] == ["images_per_s"]  # no windows recorded
    index = (built.path / "index.html").read_text()
    for text in ("NVIDIA H100 80GB HBM3", "550.54.15", "224", "AMD EPYC", "2026-11-22 00:24", "unsigned"):
        assert text in index
    leaderboard = (built.path / "workloads" / f"{board.slug}.html").read_text()
    assert 'id="chart-leaderboard-' in leaderboard and "95% t-interval" in leaderboard
    assert "[" in leaderboard and "Steady-state throughput (img/s)" in leaderboard
    machines = (built.path / "machines.html").read_text()
    assert "0.500" in machines and "A better" in machines and 'rowspan="2"' in machines
    assert "2,500" in leaderboard  # the steady-state column


def test_hostile_names_are_escaped_everywhere(tmp_path):
    gpu_name = '"><img src=x onerror=alert(2)>'
    a = recorded(tmp_path, "hostile", suite=HOSTILE, options={"<b>opt": HOSTILE})
    _edit(a / "system.json", lambda s: s.update(gpus=[{"name": gpu_name, "driver": "<i>1"}]))
    reseal(a)
    built = site.build([a], tmp_path / "site")
    for rel, data in files_of(built.path).items():
        text = data.decode("utf-8")
        for raw in (HOSTILE, "<img src=x", "<b>opt", "<i>1"):
            assert raw not in text, (rel, raw)
    index = (built.path / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index and "&#34;&gt;&lt;img src=x" in index
    (board,) = built.leaderboards
    leaderboard = (built.path / "workloads" / f"{board.slug}.html").read_text()
    assert "&lt;b&gt;opt=" in leaderboard
    assert "<script" not in pages_text(built.path)


def test_a_tampered_bundle_is_shown_as_failing_and_never_ranked(tmp_path):
    good = recorded(tmp_path, "good")
    tampered = recorded(tmp_path, "tampered", gpus=1)
    _edit(tampered / "runs" / "01-pytorch-eager" / "metrics.json",
          lambda m: m["timing"].update(images_per_s=999_999.0))  # after sealing
    built = site.build([good, tampered], tmp_path / "site")
    record = next(b for b in built.bundles if b.name == "tampered")
    assert not record.trusted and record.problems == [
        "runs/01-pytorch-eager/metrics.json: changed (its sha256 differs from the one MANIFEST.sha256 "
        "records: the file or that line of the manifest was edited)"]
    (board,) = built.leaderboards
    assert {e.bundle.name for e in board.ranked} == {"good"}
    assert {e.bundle.name for e in board.untrusted} == {"tampered"}
    assert site.views.machine_pairs(built.machines) == []  # the only other machine's bundle fails
    index = (built.path / "index.html").read_text()
    assert "does NOT verify" in index
    page = (built.path / "bundles" / f"{record.slug}" / "index.html").read_text()
    assert "runs/01-pytorch-eager/metrics.json: changed" in page
    leaderboard = (built.path / "workloads" / f"{board.slug}.html").read_text()
    assert "From bundles that do NOT verify" in leaderboard and "999,999" in leaderboard


def test_signature_status_is_shown_and_a_bad_signature_untrusts(tmp_path, monkeypatch):
    import types

    a = recorded(tmp_path, "a")
    b = recorded(tmp_path, "b", gpus=1)
    verdicts = {"a": {"signed": True, "verified": True, "signer": "lab <ci@example.org>", "message": "ok"},
                "b": {"signed": True, "verified": False, "signer": "mallory", "message": "bad signature"}}
    fake = types.ModuleType(bundles.SIGNING_MODULE)
    fake.signature_status = lambda directory, signers_file=None: dict(verdicts[Path(directory).name])
    monkeypatch.setitem(sys.modules, bundles.SIGNING_MODULE, fake)
    built = site.build([a, b], tmp_path / "site")
    signed = {r.name: (r.trusted, r.signer_text) for r in built.bundles}
    assert signed == {"a": (True, "lab <ci@example.org>"),
                      "b": (False, "mallory (signature does NOT verify)")}
    index = (built.path / "index.html").read_text()
    assert "lab &lt;ci@example.org&gt;" in index and "signature does NOT verify" in index


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen (openssh-client)")
def test_a_really_signed_bundle_names_its_signer_and_signers_require_one(tmp_path):
    signing = pytest.importorskip(bundles.SIGNING_MODULE)
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text("alice@example.org " + " ".join(Path(f"{key}.pub").read_text().split()[:2]) + "\n")
    a = recorded(tmp_path, "a")
    signing.sign(a, key)
    b = recorded(tmp_path, "b", gpus=1)
    unchecked = site.build([a, b], tmp_path / "site")
    assert {r.name: (r.trusted, r.signer_text) for r in unchecked.bundles} == {
        "a": (True, "signed, not checked (give --signers)"), "b": (True, "unsigned")}
    checked = site.build([a, b], tmp_path / "site", signers=signers)
    assert {r.name: (r.trusted, r.signer_text) for r in checked.bundles} == {
        "a": (True, "alice@example.org"), "b": (False, "no signature (one was required)")}
    assert "alice@example.org" in (checked.path / "index.html").read_text()
    with pytest.raises(DlbenchError, match="no such allowed-signers file"):
        site.build([a], tmp_path / "site", signers=tmp_path / "missing")


def test_signature_adapter_says_unsigned_without_the_signing_module(tmp_path, monkeypatch):
    """Until orchestrator.results.signing lands (or in a dlbench without it): unsigned."""
    monkeypatch.setitem(sys.modules, bundles.SIGNING_MODULE, None)  # importing it fails as if absent
    assert bundles.signature_status(tmp_path, None) == bundles.UNSIGNED
    built = site.build([recorded(tmp_path, "a")], tmp_path / "site")
    assert built.bundles[0].trusted and built.bundles[0].signer_text == "unsigned"


def test_output_refuses_a_directory_that_is_not_a_site_and_replaces_a_site(tmp_path):
    a = recorded(tmp_path, "a")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DlbenchError, match="exists and is not a dlbench site"):
        site.build([a], other)
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"]
    out = tmp_path / "site"
    out.mkdir()  # empty: taken
    site.build([a], out)
    (out / "stale.html").write_text("from an earlier site")
    site.build([a], out)  # an earlier site: replaced whole
    assert not (out / "stale.html").exists() and (out / output.SITE_MARKER).is_file()
    with pytest.raises(DlbenchError, match="inside the bundle"):
        site.build([a], a / "site")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dlbench-site-")]  # no leftovers


def test_cli_builds_a_site_and_refuses_hostile_archives_in_one_line(tmp_path):
    a = recorded(tmp_path, "a")
    b = recorded(tmp_path, "b", gpus=1)
    out = tmp_path / "site"
    proc = dlbench("site", a, bundle.pack(b), "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "  verified: a", "  verified: b",
        f"Site: {out}/index.html (2 bundle(s), 2 machine(s), 1 workload(s))"]
    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(linked, "w:gz") as tar:
        tar.add(a, arcname="linked")
        info = tarfile.TarInfo("linked/runs/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    proc = dlbench("site", a, linked, "-o", tmp_path / "site-2")
    assert proc.returncode == 2 and proc.stdout == "  verified: a\n"
    assert proc.stderr.splitlines() == [
        f"dlbench: error: {linked}: member 'linked/runs/passwd': a symbolic link (a bundle archive holds "
        "only regular files and directories); nothing was extracted"]
    assert not (tmp_path / "site-2").exists()
    proc = dlbench("site", a, a, "-o", tmp_path / "site-3")
    assert proc.returncode == 2 and "the same bundle as one given before it" in proc.stderr


def test_a_directory_bundle_holding_a_link_is_shown_failing_not_followed(tmp_path):
    a = recorded(tmp_path, "a")
    os.symlink("/etc/passwd", a / "runs" / "01-pytorch-eager" / "extra.txt")
    built = site.build([a], tmp_path / "site")
    (record,) = built.bundles
    assert not record.trusted and record.report_html is None
    assert any("a symbolic link" in line for line in record.problems)
    assert "root:" not in pages_text(built.path)
