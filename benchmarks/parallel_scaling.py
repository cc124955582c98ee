"""1 worker against N workers, per framework, in one dlbench run: global throughput (median
and CV over repeats), speed-up and scaling efficiency, each worker on its own cores.

    python benchmarks/parallel_scaling.py [--workers 2] [--repeats 3] [--backend docker]
        [--frameworks pytorch/eager,tensorflow/graph,jax/flax,keras/jax]

The suite is weak scaling (batch 64 per worker), synthetic MNIST-shaped data, the 1-worker
run given the same cores as ONE worker of the N-worker run (a cpuset of that size), so the
efficiency says what N workers get from N times the cores. The machine is shared and
noisy: the runs of a repeat are interleaved (every framework and worker count once, then
again), and the figures are medians with their coefficient of variation.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FRAMEWORKS = "pytorch/eager,tensorflow/graph,tensorflow/eager,jax/flax,keras/jax"


def suite_text(frameworks: list[str], workers: int, repeats: int, train: int) -> tuple[str, int]:
    cores = sorted(os.sched_getaffinity(0))
    per_worker = len(cores) // workers
    if per_worker < 1:
        sys.exit(f"parallel_scaling: {workers} workers need {workers} CPUs; this host has {len(cores)}")
    one = ",".join(map(str, cores[:per_worker]))
    runs = []
    for _ in range(repeats):  # interleaved: drift in the machine's load hits every row alike
        for framework in frameworks:
            f, a = framework.split("/")
            runs.append(f"  - {{framework: {f}, api: {a}, parallel: {{workers: 1}}, resources: {{cpuset: '{one}'}}}}")
            runs.append(f"  - {{framework: {f}, api: {a}, parallel: {{workers: {workers}}}}}")
    # repeats as separate entries would be "the same run twice": seed differs per repeat
    lines = []
    for i, line in enumerate(runs):
        lines.append(line[:-1] + f", seed: {42 + i // (2 * len(frameworks))}}}")
    return (f"name: parallel-scaling\ndefaults: {{synthetic: true, train_limit: {train}, test_limit: 512, "
            f"batch_size: 64, epochs: 2, warmup_steps: 5}}\nruns:\n" + "\n".join(lines) + "\n"), per_worker


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="docker")
    parser.add_argument("--frameworks", default=DEFAULT_FRAMEWORKS)
    parser.add_argument("--train", type=int, default=8192, help="training images per epoch")
    args = parser.parse_args()
    frameworks = args.frameworks.split(",")
    text, per_worker = suite_text(frameworks, args.workers, args.repeats, args.train)
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "parallel-scaling.yaml"
        suite.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--backend",
                               args.backend, "--results", tmp], cwd=REPO, capture_output=True, text=True)
        results = next((p for p in Path(tmp).iterdir() if p.is_dir()), None)
        if results is None:
            print(proc.stdout[-3000:] + proc.stderr[-2000:])
            return 1
        rates: dict[tuple[str, int], list[float]] = {}
        failed = []
        for run_dir in sorted((results / "runs").iterdir()):
            metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
            if metrics.get("status") != "ok":
                failed.append(f"{run_dir.name}: {metrics.get('error') or 'no metrics'}")
                continue
            name = f"{metrics['framework']['name']}/{metrics['framework']['api']}"
            size = metrics["parallel"]["world_size"]
            rates.setdefault((name, size), []).append(metrics["timing"]["images_per_s"])
    print(f"weak scaling, batch 64 per worker, {args.train} synthetic MNIST images x 2 epochs, "
          f"{per_worker} core(s) per worker, {args.repeats} interleaved repeats ({args.backend})")
    print(f"{'framework/api':<18} {'1 worker img/s':>16} {'CV':>6} {f'{args.workers} workers img/s':>17} "
          f"{'CV':>6} {'speed-up':>9} {'efficiency':>11}")
    for name in frameworks:
        one, many = rates.get((name, 1), []), rates.get((name, args.workers), [])
        if not one or not many:
            print(f"{name:<18} (no result: see below)")
            continue
        t1, tn = statistics.median(one), statistics.median(many)
        print(f"{name:<18} {t1:>16,.0f} {cv(one):>6.1%} {tn:>17,.0f} {cv(many):>6.1%} "
              f"{tn / t1:>8.2f}x {tn / (args.workers * t1):>10.0%}")
    for line in failed:
        print(f"failed: {line}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
