"""One precision policy, explicit: a framework/API that cannot do a policy is `unsupported`
with the reason, in the workload (run by hand) and in the orchestrator (never started, its
environment not even prepared), and never runs as fp32 under another label."""
import json
import textwrap

import pytest

from contract import registry
from contract.registry import IMPLEMENTATIONS, PRECISION_POLICIES, precision_problem
from orchestrator.execution.runner import run_suite
from orchestrator.plan.suite import load_suite
from orchestrator.results.directory import classify
from tests.fake_backend import FakeBackend, registered
from workloads import __main__ as workloads_main
from workloads import harness


def test_every_framework_api_has_an_answer_for_every_policy_and_device():
    for framework, api in IMPLEMENTATIONS:
        for policy in PRECISION_POLICIES:
            for device in ("cpu", "gpu"):
                problem = precision_problem(framework, api, policy, device)
                assert problem is None or (isinstance(problem, str) and len(problem) > 20)
    assert all(pair in IMPLEMENTATIONS for pair in registry.PRECISION_UNSUPPORTED)
    assert all(policy in PRECISION_POLICIES for reasons in registry.PRECISION_UNSUPPORTED.values()
               for policy in reasons)
    # fp32 is every framework's, everywhere; tf32 and fp16 are GPU policies
    assert not any(precision_problem(f, a, "fp32", d) for f, a in IMPLEMENTATIONS for d in ("cpu", "gpu"))
    assert precision_problem("pytorch", "eager", "tf32", "cpu").startswith("TF32 is an NVIDIA")
    assert precision_problem("pytorch", "eager", "bf16", "cpu") is None


def test_by_hand_an_unsupported_policy_exits_4_with_status_unsupported(tmp_path, capsys):
    code = workloads_main.main(["run", "--framework", "chainer", "--api", "eager", "--synthetic",
                                "--precision", "bf16", "--out", str(tmp_path)])
    assert code == harness.EXIT_UNSUPPORTED == 4
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "unsupported"
    assert metrics["error"] == "precision bf16 on cpu: Chainer has no bfloat16 dtype (no mixed-precision training API for it)"
    assert "epochs" not in metrics  # nothing ran, nothing was imported
    assert classify(code, metrics, None) == ("unsupported", metrics["error"])


def test_a_matrix_over_precisions_records_unsupported_runs_without_starting_them(tmp_path):
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent("""\
        name: precisions
        defaults: {synthetic: true, epochs: 1, train_limit: 256, test_limit: 128}
        matrix:
          framework: [pytorch/eager, theano/graph]
          precision: [fp32, bf16, tf32]
        """))
    with registered(FakeBackend):
        backend = FakeBackend()
        results = run_suite(load_suite(suite_file), backend, tmp_path / "results", say=lambda line: None)
    runs = {d.name: json.loads((d / "run.json").read_text()) for d in (results.path / "runs").iterdir()}
    by_outcome: dict[str, list[str]] = {}
    for run_id, record in sorted(runs.items()):
        by_outcome.setdefault(record["outcome"], []).append(run_id)
    assert len(by_outcome["ok"]) == 3          # pytorch fp32 and bf16, theano fp32 on the CPU
    assert len(by_outcome["unsupported"]) == 3  # both tf32 (a GPU format), theano bf16
    assert sorted(backend.executed()) == sorted(by_outcome["ok"])
    assert ("prepare", "theano/cpu") in backend.calls  # its fp32 run needs the image
    theano_bf16 = next(r for i, r in runs.items() if "theano" in i and "bf16" in i)
    assert theano_bf16["message"] == ("precision bf16 on cpu: Theano has no bfloat16 dtype "
                                      "(no mixed-precision training API)")
    summary = json.loads((results.path / "summary.json").read_text())
    assert sorted(e["outcome"] for e in summary["runs"]).count("unsupported") == 3


@pytest.mark.parametrize("policy", ["fp32", "tf32", "bf16", "fp16"])
def test_fp32_alone_forbids_tf32_library_wide(policy, monkeypatch):
    monkeypatch.setenv(harness.TF32_OVERRIDE, "1")  # inherited from somewhere: never trusted
    env = harness.apply_precision_env(policy)
    assert env == {harness.TF32_OVERRIDE: "0" if policy == "fp32" else None}


def test_an_image_whose_kernels_miss_the_gpu_is_unavailable_before_it_is_built_fake_nvml(
        tmp_path, monkeypatch):
    """MXNet 1.9.1's cu112 wheels carry sm_50..86 kernels and no PTX: on an H100 (sm_90) its
    runs are `unavailable`, nothing is built, and --resume would not retry them."""
    from orchestrator.execution import runner, sysinfo
    from orchestrator.execution.resume import pending_runs
    h100 = {"index": 0, "uuid": "GPU-fake-h100", "name": "NVIDIA H100 80GB HBM3",
            "driver": "580.65.06", "compute_capability": "9.0"}
    monkeypatch.setattr(sysinfo, "gpus", lambda: [h100])  # no NVIDIA GPU here: NVML faked
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(textwrap.dedent("""\
        name: hopper
        defaults: {synthetic: true, epochs: 1, train_limit: 256, test_limit: 128, device: gpu}
        runs:
          - {framework: mxnet, api: gluon}
          - {framework: pytorch, api: eager}
        """))
    with registered(FakeBackend):
        backend = FakeBackend()
        results = runner.run_suite(load_suite(suite_file), backend, tmp_path / "results",
                                   say=lambda line: None)
    runs = {d.name: json.loads((d / "run.json").read_text()) for d in (results.path / "runs").iterdir()}
    mxnet = next(r for i, r in runs.items() if "mxnet" in i)
    assert mxnet["outcome"] == "unavailable" and "sm_90" in mxnet["message"]
    assert ("prepare", "mxnet/cuda") not in backend.calls and ("prepare", "pytorch/cuda") in backend.calls
    assert pending_runs(results, load_suite(suite_file)) == []
