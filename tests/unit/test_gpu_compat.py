"""orchestrator.images.gpu_compat against fake NVML data: GPU entries as system.json records
them, for boards this machine does not have. Nothing here asks a real driver."""
from __future__ import annotations

import pytest

from orchestrator.images import environment_problem, gpu_compat, load_images

IMAGES = load_images(check_locks=False)
CUDA_IMAGES = sorted(fw for fw, spec in IMAGES.items() if "cuda" in spec.flavours)


def fake_gpu(cc: str | None = "8.0", driver: str | None = "580.65.06", name: str = "NVIDIA A100-SXM4-80GB",
             index: int = 0) -> dict:
    """One GPU as sysinfo.gpus() reports it (the fields gpu_compat reads, plus a few)."""
    return {"index": index, "name": name, "memory_mb": 81920, "driver": driver, "cuda_driver": "13.0",
            "uuid": f"GPU-0000000{index}-0000-0000-0000-000000000000", "compute_capability": cc}


H100 = fake_gpu("9.0", name="NVIDIA H100 80GB HBM3")
A100 = fake_gpu("8.0")


def test_h100_refuses_mxnet_naming_sm_90_fake_nvml():
    problem = environment_problem("mxnet", "cuda", [H100])
    assert problem is not None and "\n" not in problem
    assert "sm_90" in problem and "NVIDIA H100 80GB HBM3" in problem and "mxnet" in problem
    assert "sm_86" in problem and "no PTX" in problem


def test_a100_runs_mxnet_fake_nvml():
    assert environment_problem("mxnet", "cuda", [A100]) is None


def test_old_driver_refuses_pytorch_fake_nvml():
    problem = environment_problem("pytorch", "cuda", [fake_gpu(driver="535.104.05")])
    assert problem is not None and "535.104.05" in problem
    assert IMAGES["pytorch"].flavours["cuda"].min_driver in problem and "CUDA 13.0" in problem


@pytest.mark.parametrize("driver", ["580.65.06", "580", "581.01", "610.1.2"])
def test_driver_of_the_branch_or_newer_passes_fake_nvml(driver):
    assert environment_problem("pytorch", "cuda", [fake_gpu(driver=driver)]) is None


def test_driver_is_checked_before_the_architecture_fake_nvml():
    problem = environment_problem("mxnet", "cuda", [fake_gpu("9.0", driver="470.57.02")])
    assert problem is not None and "470.57.02" in problem and "sm_90" not in problem


@pytest.mark.parametrize("gpu", [
    {"index": 0},                                             # nothing known
    fake_gpu(cc=None, driver=None),                           # NVML could not say
    fake_gpu(cc="", driver=""),
    fake_gpu(cc="N/A", driver="N/A"),                         # not a version at all
])
def test_what_is_unknown_refuses_nothing_fake_nvml(gpu):
    assert environment_problem("mxnet", "cuda", [gpu]) is None
    assert environment_problem("mxnet", "cuda", []) is None


@pytest.mark.parametrize("framework,cc,runs", [
    ("mxnet", "8.9", True),        # sm_86 kernels run on sm_89: same major, newer minor
    ("mxnet", "7.5", True),        # sm_70 on sm_75
    ("mxnet", "5.2", True),
    ("mxnet", "3.7", False),       # older than every kernel, and no PTX
    ("mxnet", "10.0", False),      # Blackwell: another major, no PTX
    ("pytorch", "6.1", False),     # CUDA 13 dropped Pascal; its PTX compiles only forward
    ("pytorch", "7.0", False),     # ... and Volta
    ("pytorch", "12.1", True),     # sm_120 kernels
    ("pytorch", "13.0", True),     # a future GPU: compute_120 PTX
    ("tensorflow", "10.0", True),  # no sm_100 kernels: compute_90 PTX
    ("tensorflow", "8.6", True),   # sm_80
    ("tensorflow", "5.2", False),
    ("tensorflow-legacy", "5.2", True),
    ("jax", "11.0", False),        # Thor: sm_100 kernels are another major, compute_120 is newer
    ("jax", "12.0", True),
])
def test_kernels_and_ptx_rules_fake_nvml(framework, cc, runs):
    problem = environment_problem(framework, "cuda", [fake_gpu(cc)])
    assert (problem is None) == runs, problem


def test_ptx_reason_says_it_compiles_only_forward_fake_nvml():
    problem = environment_problem("pytorch", "cuda", [fake_gpu("6.1", name="Tesla P40")])
    assert problem is not None and "sm_61" in problem and "compute_120" in problem and "newer" in problem


def test_one_gpu_outside_the_kernels_refuses_the_run_fake_nvml():
    """A run sees every GPU it is given: one it cannot use is enough to refuse it."""
    problem = environment_problem("mxnet", "cuda", [A100, {**H100, "index": 1}])
    assert problem is not None and problem.startswith("GPU 1 (")


@pytest.mark.parametrize("framework", CUDA_IMAGES)
def test_every_cuda_image_runs_on_an_a100_with_a_new_driver_fake_nvml(framework):
    assert environment_problem(framework, "cuda", [fake_gpu("8.0", driver="595.10")]) is None


@pytest.mark.parametrize("framework", [fw for fw in CUDA_IMAGES if fw != "mxnet"])
def test_only_mxnet_is_refused_on_an_h100_fake_nvml(framework):
    assert environment_problem(framework, "cuda", [{**H100, "driver": "595.10"}]) is None


def test_cpu_flavours_and_unknown_names_are_not_judged_fake_nvml():
    ancient = fake_gpu("3.0", driver="340.108")
    assert environment_problem("mxnet", "cpu", [ancient]) is None
    assert environment_problem("chainer", "cuda", [ancient]) is None   # unavailable: planning says why
    assert environment_problem("caffe", "cuda", [ancient]) is None


def test_sm_names():
    assert gpu_compat.sm("9.0") == "sm_90" and gpu_compat.sm((12, 0)) == "sm_120"
    assert gpu_compat.sm("8.6", "compute") == "compute_86"
