"""`dlbench doctor`: the real command on this machine (whatever it has: the tests say which
lines must hold here), and its GPU lines against fake NVML data (GPU entries as
sysinfo.gpus() gives them, for boards this machine does not have)."""
from __future__ import annotations

import re

import pytest

from orchestrator import doctor
from orchestrator.cli import main
from orchestrator.cli.doctor import format_table
from orchestrator.execution import sysinfo
from orchestrator.paths import REPO_ROOT
from tests.integration.helpers import dlbench

QUICK, QUICK_GPU = REPO_ROOT / "suites/quick.yaml", REPO_ROOT / "suites/quick-gpu.yaml"


def _engine_up() -> bool:
    from orchestrator.execution.backends.docker import connect

    return connect()[0] is not None


def _fashion_mnist_ready() -> bool:
    from orchestrator import datasets

    loc = datasets.locate("fashion-mnist", ("train", "test"))
    return loc is not None and loc.has(("train", "test"))


ROW = re.compile(r"^  (?P<name>\S(?:.*?\S)?)\s{2,}(?P<status>ok|warn|FAIL|skip)\s{2,}(?P<detail>.*)$")


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, detail) from the printed table (fix lines start with ->)."""
    return {m["name"]: (m["status"], m["detail"]) for m in map(ROW.match, stdout.splitlines()) if m}


def test_gpu_suite_without_a_driver_fails_on_the_driver_line():
    if sysinfo.gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    proc = dlbench("doctor", QUICK_GPU, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert table["NVIDIA driver"][0] == "FAIL" and "NVML" in table["NVIDIA driver"][1]
    assert "-> install the NVIDIA driver" in proc.stdout
    assert table["suite"][0] == "ok"
    last = proc.stdout.rstrip().splitlines()[-1]
    assert "problem(s) block suite quick-gpu here" in last and "NVIDIA driver" in last


def test_cpu_suite_passes_where_docker_runs_and_its_data_is_ready():
    if not _engine_up() or not _fashion_mnist_ready():
        pytest.skip("needs a Docker engine and Fashion-MNIST on this host")
    proc = dlbench("doctor", QUICK, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert table["Docker engine"][0] == "ok"
    assert table["dataset fashion-mnist"][0] == "ok" and "checksums match" in table["dataset fashion-mnist"][1]
    assert table["driver vs cuda images"][0] == "skip"     # the suite runs nothing on a GPU
    assert all(status != "FAIL" for status, _ in table.values())
    assert proc.stdout.rstrip().endswith("nothing blocks suite quick here")


def test_without_a_suite_it_fails_only_when_nothing_can_run():
    proc = dlbench("doctor", timeout=300)
    table = rows(proc.stdout)
    can_run = table["Docker engine"][0] == "ok" or table["local backend"][0] == "ok"
    assert proc.returncode == (0 if can_run else 1), proc.stdout + proc.stderr
    if not sysinfo.gpus():  # a GPU line never blocks the host as a whole
        assert table["NVIDIA driver"][0] == "skip"
        assert table["GPU architecture vs cuda images"][0] == "skip"


def test_a_suite_that_does_not_load_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nruns: [{framework: pytorch\n")
    proc = dlbench("doctor", bad, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("dlbench: error: ") and proc.stderr.count("\n") == 1


# -- the judgement itself, on a fake host ---------------------------------------------

def fake_gpu(cc="9.0", driver="580.65.06", name="NVIDIA H100 80GB HBM3", index=0) -> dict:
    return {"index": index, "name": name, "driver": driver, "cuda_driver": "13.0",
            "uuid": f"GPU-0000000{index}-0000-0000-0000-000000000000", "compute_capability": cc}


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def gpu_needs(*frameworks: str) -> doctor.Needs:
    return doctor.Needs(suite="fake", gpu=dict.fromkeys(frameworks),
                        images=tuple((fw, "cuda") for fw in frameworks))


def test_nothing_can_run_without_engine_and_local_backend():
    host = doctor.Host(client=None, engine_problem="unix:///x.sock: No such file or directory", uv=None)
    checks = by_name(doctor.run_checks(doctor.Needs(), host))
    assert checks["Docker engine"].status == checks["local backend"].status == doctor.FAIL
    assert checks["Docker engine"].fix and checks["local backend"].fix == "make setup (uv is installed with dlbench)"
    host.uv = "/usr/bin/uv"
    checks = by_name(doctor.run_checks(doctor.Needs(), host))
    assert checks["Docker engine"].status == doctor.WARN and "local backend" in checks["Docker engine"].detail


def test_h100_blocks_mxnet_not_pytorch_fake_nvml():
    host = doctor.Host(gpus=[fake_gpu("9.0")], uv="/usr/bin/uv")
    checks = by_name(doctor.run_checks(gpu_needs("mxnet", "pytorch"), host))
    assert checks["NVIDIA driver"].status == doctor.OK and "sm_90" in checks["NVIDIA driver"].detail
    assert checks["driver vs cuda images"].status == doctor.OK
    arch = checks["GPU architecture vs cuda images"]
    assert arch.status == doctor.FAIL and "sm_90" in arch.detail and "mxnet" in arch.detail
    assert "pytorch" not in arch.detail and "mxnet" in arch.fix
    ok = by_name(doctor.run_checks(gpu_needs("pytorch", "jax"), host))
    assert ok["GPU architecture vs cuda images"].status == doctor.OK


def test_old_driver_blocks_the_images_that_need_a_newer_one_fake_nvml():
    host = doctor.Host(gpus=[fake_gpu("8.0", driver="535.104.05", name="NVIDIA A100-SXM4-80GB")])
    check = by_name(doctor.run_checks(gpu_needs("pytorch", "tensorflow-legacy"), host))["driver vs cuda images"]
    assert check.status == doctor.FAIL
    assert "pytorch (580)" in check.detail and "tensorflow-legacy" not in check.detail
    assert check.fix == "update the NVIDIA driver to the 580 branch or newer"


def test_without_a_suite_gpu_problems_warn_fake_nvml():
    host = doctor.Host(gpus=[fake_gpu("9.0", driver="535.54.03")], uv="/usr/bin/uv")
    checks = by_name(doctor.run_checks(doctor.Needs(), host))
    assert checks["driver vs cuda images"].status == doctor.WARN
    assert checks["GPU architecture vs cuda images"].status == doctor.WARN
    assert not [c for c in checks.values() if c.status == doctor.FAIL]


def test_a_gpu_the_suite_does_not_use_is_not_judged_fake_nvml():
    host = doctor.Host(gpus=[fake_gpu("8.0", name="A100", index=0), fake_gpu("9.0", name="H100", index=1)])
    needs = doctor.Needs(suite="fake", gpu={"mxnet": frozenset({"0"})}, images=(("mxnet", "cuda"),))
    assert by_name(doctor.run_checks(needs, host))["GPU architecture vs cuda images"].status == doctor.OK
    needs = doctor.Needs(suite="fake", gpu={"mxnet": None}, images=(("mxnet", "cuda"),))
    check = by_name(doctor.run_checks(needs, host))["GPU architecture vs cuda images"]
    assert check.status == doctor.FAIL and "GPU 1 (H100)" in check.detail


def test_unknown_gpu_facts_skip_the_comparisons_fake_nvml():
    host = doctor.Host(gpus=[fake_gpu(cc=None, driver=None)])
    checks = by_name(doctor.run_checks(gpu_needs("mxnet"), host))
    assert checks["driver vs cuda images"].status == doctor.SKIP
    assert checks["GPU architecture vs cuda images"].status == doctor.SKIP


def test_gpu_suite_on_a_fake_gpu_host_blames_what_is_missing_fake_nvml(monkeypatch, capsys):
    """The real command, NVML answering with a fake GPU whose name carries terminal
    controls: they are printed escaped, and the driver line passes."""
    monkeypatch.setattr(sysinfo, "gpus", lambda *a, **k: [fake_gpu("9.0", name="H100\x1b[2J\x07")])
    code = main(["doctor", str(QUICK_GPU)])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "H100\\x1b[2J\\x07" in out
    table = rows(out)
    assert table["NVIDIA driver"][0] == "ok"
    assert table["GPU architecture vs cuda images"][0] == "ok"   # pytorch and tensorflow run sm_90
    blocked = [name for name, (status, _) in table.items() if status == "FAIL"]
    assert code == (1 if blocked else 0)
    assert "NVIDIA driver" not in blocked


def test_format_table_gives_every_problem_its_fix():
    lines = format_table([
        doctor.Check("a", doctor.OK, "fine", "never shown"),
        doctor.Check("longer name", doctor.FAIL, "broken", "mend it")])
    assert lines[1].split() == ["a", "ok", "fine"] and "never shown" not in "\n".join(lines)
    assert lines[3].strip() == "-> mend it"


@pytest.mark.parametrize("slurm, status", [(None, "skip"), ("", "ok"),
                                           ("munge is not running here (Failed to access socket)", "warn")])
def test_the_slurm_line_says_whether_the_controller_answers_and_never_fails_a_host(slurm, status):
    checks = by_name(doctor.run_checks(doctor.Needs(), doctor.Host(uv="/usr/bin/uv", slurm=slurm)))
    assert checks["Slurm (--backend slurm)"].status == status
    if slurm:
        assert checks["Slurm (--backend slurm)"].detail == slurm
