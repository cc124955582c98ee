"""benchmarks/gpu_check.py's verdicts, from recorded metrics (no GPU here: the runs it judges
are written by hand, as a GPU host would record them)."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "gpu_check", Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py")
assert spec and spec.loader
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def run(status="ok", epochs=((2.0, 0.20), (1.9, 0.19)), windows=(0.5, 0.5, 0.5), util=95, exit=0,
        effective=None, energy=None, median=1000.0, peak=None):
    return {"exit": exit, "util_max": util, "energy_j": energy, "log_tail": "",
            "metrics": {"status": status, "error": None, "device": {"name": "NVIDIA H200"},
                        "epochs": [{"train_s": t, "test_s": e} for t, e in epochs],
                        "steady_state": {"window_s": list(windows), "images_per_s_median": median},
                        "test": {"accuracy": 0.9}, "dataset": {"train_samples": 20_000},
                        "precision": {"effective": effective or {}},
                        "memory": {"peak_device_mb": peak}}}


def test_compile_inside_the_first_epoch_fails_the_epoch_row():
    assert gpu_check.epochs_verdict(run())[0] == "ok"
    verdict, detail = gpu_check.epochs_verdict(run(epochs=((6.2, 0.86), (3.9, 0.099))))
    assert verdict == "FAIL" and "= 1.59" in detail


def test_windows_longer_than_the_epochs_mean_unsynchronised_timing():
    assert gpu_check.sync_verdict(run(windows=(1.0, 1.0, 1.0)))[0] == "ok"      # 3 of 3.9 s
    assert gpu_check.sync_verdict(run(windows=(3.0, 3.0)))[0] == "FAIL"          # 6 > 3.9 s
    assert gpu_check.sync_verdict(run(windows=()))[0] == "FAIL"                  # no windows at all


def test_gpu_used_needs_nvml_seeing_it_busy():
    assert gpu_check.used_verdict(run())[0] == "ok"
    assert gpu_check.used_verdict(run(util=0))[0] == "FAIL"
    assert gpu_check.used_verdict(run(util=None))[0] == "ok?"
    assert gpu_check.used_verdict(run(status="failed"))[0] == "FAIL"


def test_tf32_recorded_off_reads_every_tf32_switch():
    assert gpu_check.tf32_recorded_off(run(effective={"allow_tf32_matmul": False, "cudnn_allow_tf32": False}))
    assert gpu_check.tf32_recorded_off(run(effective={"allow_tf32_matmul": False, "cudnn_allow_tf32": True})) is False
    assert gpu_check.tf32_recorded_off(run()) is None


def test_oom_row_needs_status_oom_and_exit_3():
    assert gpu_check.oom_verdict(run(status="oom", exit=3, peak=281.0))[0] == "ok"
    assert gpu_check.oom_verdict(run(status="failed", exit=1))[0] == "FAIL"


def test_bf16_speed_up_and_energy_rows():
    verdict, detail = gpu_check.speedup_verdict(run(median=1000.0), run(median=2500.0))
    assert verdict == "info" and detail.startswith("2.50x")
    assert gpu_check.energy_verdict(run(energy=None))[0] == "skip"
    verdict, detail = gpu_check.energy_verdict(run(energy=400.0))
    assert verdict == "ok" and "10.00 mJ per image" in detail  # 400 J / (2 epochs x 20,000)
