"""The same suite on the docker backend (one run at a time, on this host) and on the slurm
backend (one job per run, spread over the cluster's nodes): the wall time of the whole
`dlbench run`, alternated REPEATS times, medians and CV, and their ratio, in one run.

    SLURM_CONF=/var/tmp/dlbench-slurm/slurm.conf python benchmarks/slurm_vs_docker.py [--repeats 3]

Needs a Docker engine and a Slurm cluster whose nodes share this filesystem (the test
cluster of tests/slurm/cluster-up.sh: two nodes of one CPU each, on this machine). Every
run asks for the same `cpus` (1), so the docker backend runs them one after the other
while Slurm runs one per node at a time.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = """\
name: slurm-vs-docker
defaults: {synthetic: true, train_limit: 1024, test_limit: 256, batch_size: 64, epochs: 2,
           warmup_steps: 1, resources: {cpus: 1, memory: 1g}}
runs:
  - {framework: chainer, api: eager, seed: 1}
  - {framework: chainer, api: eager, seed: 2}
  - {framework: chainer, api: eager, seed: 3}
  - {framework: chainer, api: eager, seed: 4}
slurm: {partition: debug, poll_seconds: 2}
"""


def timed_run(suite: Path, backend: str, results: Path) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--backend", backend,
                           "--results", str(results)], cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{backend}: dlbench run failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"docker": [], "slurm": []}
    with tempfile.TemporaryDirectory(prefix="slurm-vs-docker-", dir=REPO / "results") as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(SUITE)
        timed_run(suite, "docker", Path(tmp) / "warm")  # the image built and saved before timing
        timed_run(suite, "slurm", Path(tmp) / "warm")
        for repeat in range(args.repeats):
            for backend in ("docker", "slurm") if repeat % 2 == 0 else ("slurm", "docker"):
                walls[backend].append(timed_run(suite, backend, Path(tmp) / backend))
    print(f"4 runs of chainer/eager (cpus: 1 each), whole `dlbench run`, {args.repeats} alternated repeats")
    print(f"{'backend':8} {'median s':>9} {'CV':>6}  walls")
    for backend, values in walls.items():
        cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
        print(f"{backend:8} {statistics.median(values):9.1f} {cv:6.1%}  "
              + " ".join(f"{v:.1f}" for v in values))
    ratio = statistics.median(walls["docker"]) / statistics.median(walls["slurm"])
    print(f"docker / slurm wall time: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
