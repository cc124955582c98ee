"""The first thing to run on a GPU host: do dlbench's GPU numbers hold there?

Runs the real harness (`python -m workloads run --device gpu`, no Docker, no orchestrator)
for every framework installed here among PyTorch, JAX and TensorFlow, plus a few in-process
checks, and prints one verdict table:

  GPU really used         the run's device is the GPU and NVML saw it busy during the run
  timing synchronised     the steady-state windows (synchronised at their edges) add up to the
                          epoch; PyTorch: the harness clock agrees with CUDA events
  epoch 1 = epoch 2       2 epochs over a training set with a tail batch: nothing compiled
                          or autotuned inside the clock (train and test time within 15 %)
  TF32 off under fp32     a 2048^2 float32 matmul is FP32-accurate, and the run records TF32 off
  bf16 speed-up           steady-state throughput bf16 / fp32
  OOM -> oom              a run capped to a sliver of device memory ends with status oom
  energy per image        NVML's total-energy counter over the timed epochs

    python benchmarks/gpu_check.py [--gpu 0] [--quick]      (about 3-6 minutes)
    python benchmarks/gpu_check.py --device cpu --quick     (the same runs on the CPU: proves
                                                            the script here; GPU rows say skip)

Needs numpy and jsonschema (the harness's own dependencies) and, for the NVML rows,
nvidia-ml-py (pip install nvidia-ml-py; without it those rows say "no NVML"). Exit status 1
when a row fails. Every figure comes from this one invocation.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"pytorch/eager": "torch", "jax/flax": "jax", "tensorflow/keras": "tensorflow"}
# Both sets end in a tail batch (20,000 % 128 = 32, 10,000 % 128 = 16, 2,000 % 128 = 80):
# the shapes a warm-up of full batches only would leave to be compiled inside the clock.
TRAIN_LIMIT, TEST_LIMIT, BATCH = 20_000, 2_000, 128


class Nvml:
    """The GPU's counters, or None everywhere when NVML (nvidia-ml-py) is absent."""

    def __init__(self, index: int):
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nv, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001 - no library or no driver: the rows say so
            self.nv = self.handle = None

    def energy_mj(self) -> int | None:
        try:
            return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle) if self.nv else None
        except Exception:  # noqa: BLE001 - pre-Volta GPUs have no counter
            return None

    def utilisation(self) -> int | None:
        try:
            return self.nv.nvmlDeviceGetUtilizationRates(self.handle).gpu if self.nv else None
        except Exception:  # noqa: BLE001
            return None


def run_workload(api: str, out: Path, nvml: Nvml, extra: list[str], env: dict | None = None,
                 prelude: str = "", device: str = "gpu") -> dict:
    """One harness run in its own process; follows its event lines to read the energy counter
    at the edges of each timed epoch and samples utilisation meanwhile."""
    framework, api_name = api.split("/")
    args = ["run", "--framework", framework, "--api", api_name, "--device", device, "--synthetic",
            "--workload", "mnist_cnn", "--out", str(out), *extra]
    code = f"import sys; {prelude}from workloads.__main__ import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    busy: list[int] = []
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            u = nvml.utilisation()
            if u is not None:
                busy.append(u)
    threading.Thread(target=sample, daemon=True).start()
    energy_mj, begin, log = 0, None, []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        if line.startswith("@dlbench "):
            event = json.loads(line[len("@dlbench "):])
            if event.get("event") == "timed":
                reading = nvml.energy_mj()
                if event["phase"] == "begin":
                    begin = reading
                elif reading is not None and begin is not None:
                    energy_mj += reading - begin
    proc.wait()
    done.set()
    metrics_file = out / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return {"metrics": metrics, "exit": proc.returncode, "util_max": max(busy, default=None),
            "energy_j": energy_mj / 1000 if begin is not None and nvml.energy_mj() is not None else None,
            "log_tail": "".join(log[-5:])}


# -- verdicts: pure functions of what the runs recorded (tests/unit/test_gpu_check.py) --------

def used_verdict(run: dict) -> tuple[str, str]:
    m = run["metrics"]
    if m.get("status") != "ok":
        return "FAIL", f"run {m.get('status', 'missing')}: {(m.get('error') or run['log_tail'])[:120]}"
    name, util = m["device"]["name"], run["util_max"]
    if util is None:
        return "ok?", f"device {name}; no NVML to see it busy"
    return ("ok" if util >= 10 else "FAIL"), f"device {name}; NVML utilisation up to {util} %"


def sync_verdict(run: dict) -> tuple[str, str]:
    m = run["metrics"]
    if m.get("status") != "ok":
        return "skip", "run failed"
    windows = sum(m["steady_state"]["window_s"])
    epochs = sum(e["train_s"] for e in m["epochs"])
    share = windows / epochs if epochs else 0.0
    # windows cover every full window of steps; beyond the epoch they would be unsynchronised
    ok = 0.5 <= share <= 1.0
    return ("ok" if ok else "FAIL"), f"windows {windows:.2f} s of epochs {epochs:.2f} s ({share:.0%})"


def epochs_verdict(run: dict, tolerance: float = 0.15) -> tuple[str, str]:
    m = run["metrics"]
    if m.get("status") != "ok" or len(m.get("epochs", [])) < 2:
        return "skip", "run failed"
    e1, e2 = m["epochs"][:2]
    train = e1["train_s"] / e2["train_s"]
    test = e1["test_s"] / e2["test_s"] if e2["test_s"] else float("inf")
    ok = train <= 1 + tolerance and test <= 1 + tolerance
    return ("ok" if ok else "FAIL"), (f"train {e1['train_s']:.2f}/{e2['train_s']:.2f} s = {train:.2f}, "
                                      f"test {e1['test_s']:.3f}/{e2['test_s']:.3f} s = {test:.2f}")


def tf32_recorded_off(run: dict) -> bool | None:
    """What the run recorded: every TF32 switch it reports is off."""
    effective = run["metrics"].get("precision", {}).get("effective", {})
    flags = [v for k, v in effective.items() if "tf32" in k.lower() and isinstance(v, bool)]
    return (not any(flags)) if flags else None


def speedup_verdict(fp32: dict, bf16: dict) -> tuple[str, str]:
    a, b = (r["metrics"].get("steady_state", {}).get("images_per_s_median") for r in (fp32, bf16))
    if not a or not b:
        return "skip", "a run failed or had no steady-state window"
    acc = [r["metrics"]["test"]["accuracy"] for r in (fp32, bf16)]
    return "info", f"{b / a:.2f}x ({a:,.0f} -> {b:,.0f} img/s; test acc {acc[0]:.3f} / {acc[1]:.3f})"


def oom_verdict(run: dict) -> tuple[str, str]:
    m = run["metrics"]
    status = m.get("status", "missing")
    peak = m.get("memory", {}).get("peak_device_mb")
    detail = f"status {status}, exit {run['exit']}, peak {peak if peak is None else round(peak)} MB"
    return ("ok" if status == "oom" and run["exit"] == 3 else "FAIL"), detail


def energy_verdict(run: dict) -> tuple[str, str]:
    m, joules = run["metrics"], run["energy_j"]
    if joules is None:
        return "skip", "no NVML energy counter"
    images = sum(1 for _ in m.get("epochs", [])) * m.get("dataset", {}).get("train_samples", 0)
    return ("ok" if joules > 0 and images else "FAIL"), \
        f"{joules:.0f} J over the timed epochs = {1000 * joules / max(images, 1):.2f} mJ per image"


# -- in-process checks ------------------------------------------------------------------------

def matmul_error(framework: str) -> float | None:
    """Relative error of a float32 2048^2 matmul on the GPU against float64 on the host, with
    the fp32 policy's switches: FP32 gives ~1e-6, TF32 ~1e-3."""
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2048, 2048), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    if framework == "torch":
        import torch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        got = (torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()).cpu().numpy()
    elif framework == "jax":
        import jax
        jax.config.update("jax_default_matmul_precision", "highest")
        got = np.asarray(jax.numpy.asarray(a) @ jax.numpy.asarray(b))
    else:
        return None
    return float(np.abs(got - exact).max() / np.abs(exact).max())


def torch_clock_vs_events() -> tuple[str, str]:
    """The harness's Clock around 200 queued matmuls against CUDA events on the same stream."""
    import torch

    sys.path.insert(0, str(REPO))
    from workloads.harness import Clock

    class Sync:
        def synchronize(self):
            torch.cuda.synchronize()
    x = torch.randn(4096, 4096, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def work():
        start.record()
        for _ in range(200):
            x @ x
        end.record()
    _, wall = Clock(Sync()).time(work)  # type: ignore[arg-type]
    device = start.elapsed_time(end) / 1000
    ok = device <= wall <= device * 1.10 + 0.005
    return ("ok" if ok else "FAIL"), f"clock {wall:.3f} s, CUDA events {device:.3f} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU to check")
    p.add_argument("--quick", action="store_true", help="PyTorch and JAX only, smaller runs")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                   help="cpu: run the same workloads on the CPU to prove the script (GPU rows skip)")
    args = p.parse_args()
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    missing = [m for m in ("numpy", "jsonschema") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu_check: needs {', '.join(missing)} (pip install {' '.join(missing)})", file=sys.stderr)
        return 2
    present = [api for api, module in FRAMEWORKS.items() if importlib.util.find_spec(module)
               and not (args.quick and module == "tensorflow")]
    if not present:
        print("gpu_check: none of PyTorch, JAX, TensorFlow is installed here", file=sys.stderr)
        return 2
    nvml = Nvml(args.gpu)
    limits = ["--train-limit", str(TRAIN_LIMIT // (2 if args.quick else 1)),
              "--test-limit", str(TEST_LIMIT), "--batch-size", str(BATCH)]
    rows: list[tuple[str, str, str, str]] = []
    gpu = args.device == "gpu"
    if not gpu:
        nvml = Nvml(-1)  # no GPU rows from another device's counters
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dlbench-gpu-check-") as tmp:
        for api in present:
            out = Path(tmp) / api.replace("/", "-")
            fp32 = run_workload(api, out / "fp32", nvml, [*limits, "--epochs", "2"], device=args.device)
            bf16 = run_workload(api, out / "bf16", nvml, [*limits, "--epochs", "1", "--precision", "bf16"],
                                device=args.device)
            used = used_verdict(fp32) if gpu else ("skip", f"--device cpu: {fp32['metrics'].get('status')}")
            rows += [(api, "GPU really used", *used),
                     (api, "timing synchronised", *sync_verdict(fp32)),
                     (api, "epoch 1 = epoch 2", *epochs_verdict(fp32)),
                     (api, "bf16 speed-up", *speedup_verdict(fp32, bf16)),
                     (api, "energy per image", *energy_verdict(fp32))]
            module = FRAMEWORKS[api]
            if not gpu:
                rows.append((api, "TF32 off under fp32", "skip", "TF32 is a GPU format"))
                continue
            error = matmul_error(module)
            recorded = tf32_recorded_off(fp32)
            if error is not None:
                ok = error < 1e-4 and recorded is not False
                rows.append((api, "TF32 off under fp32", "ok" if ok else "FAIL",
                             f"matmul rel. error {error:.1e} (TF32 ~1e-3); recorded off: {recorded}"))
            else:
                rows.append((api, "TF32 off under fp32", "ok" if recorded else "FAIL",
                             f"recorded off: {recorded}"))
            if module == "torch":
                rows.append((api, "timing synchronised", *torch_clock_vs_events()))
                oom = run_workload(api, out / "oom", nvml, ["--train-limit", "8192", "--test-limit", "128",
                                                            "--batch-size", "8192", "--epochs", "1"],
                                   prelude="import torch; torch.cuda.set_per_process_memory_fraction(0.002); ")
                rows.append((api, "OOM -> oom", *oom_verdict(oom)))
            if module == "jax":
                oom = run_workload(api, out / "oom", nvml, ["--train-limit", "8192", "--test-limit", "128",
                                                            "--batch-size", "8192", "--epochs", "1"],
                                   env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.002"})
                rows.append((api, "OOM -> oom", *oom_verdict(oom)))
    width = max(len(r[0]) for r in rows)
    print(f"\ndlbench gpu_check: GPU {args.gpu}, {time.monotonic() - started:.0f} s\n")
    print(f"{'framework/API':<{width}}  {'check':<20}  {'verdict':<7}  detail")
    for api, check, verdict, detail in rows:
        print(f"{api:<{width}}  {check:<20}  {verdict:<7}  {detail}")
    return 1 if any(r[2] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
