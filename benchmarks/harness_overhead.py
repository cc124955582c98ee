"""How much the benchmark harness itself costs.

Steady-state training images/s of one workload, three ways, interleaved repeat by
repeat so that drift on a shared machine hits all of them alike:
  bare     benchmarks/bare_loop.py in a container made exactly like a run's container
           (same image, limits, lockdown): the framework file's model and step, no harness
  docker   the full harness through the docker backend (resource monitor included)
  local    the full harness through the local backend (same lock files, no container)
Prints medians, repeat-to-repeat CV and the ratios docker/bare (goal: >= 0.99, i.e.
overhead <= 1 %) and docker/local (goal: within 2 %).

    .venv/bin/python benchmarks/harness_overhead.py [--repeats 5] [--train-limit 10000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator import datasets  # noqa: E402
from orchestrator.execution.backends.docker import DockerBackend, connect  # noqa: E402
from orchestrator.execution.backends.local import LocalBackend  # noqa: E402
from orchestrator.plan.suite import load_suite  # noqa: E402
from orchestrator.results.directory import ResultsDir, read_metrics  # noqa: E402

BENCH_MOUNT = "/opt/dlbench-bench"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", default="pytorch/eager")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--memory", default="4g")
    p.add_argument("--intra-op", type=int, default=None,
                   help="threads.intra_op (1 keeps other load on a small shared host from "
                        "turning OpenMP spin-waits into the dominant noise)")
    return p.parse_args()


def planned_runs(args, tmp: Path):
    framework, api = args.framework.split("/")
    suite = tmp / "overhead.yaml"
    suite.write_text(f"""name: overhead
defaults: {{dataset: fashion-mnist, epochs: {args.epochs},
           batch_size: {args.batch_size}, train_limit: {args.train_limit}, test_limit: 1000,
           eval_every_epoch: false, repeats: {args.repeats}, resources: {{memory: {args.memory}}},
           threads: {{intra_op: {args.intra_op or 'null'}}}}}
runs: [{{framework: {framework}, api: {api}}}]
""")
    return load_suite(suite).runs


def bare_run(backend: DockerBackend, run, run_dir, data_dir: str, env: dict) -> float:
    spec = run.spec_for(backend.dataset_path(run, data_dir))
    (run_dir.path / "spec.json").write_text(json.dumps(spec))
    config = backend.container_config(run, run_dir, data_dir, env)
    config["name"] += "-bare"
    config["entrypoint"] = ["python", f"{BENCH_MOUNT}/bare_loop.py"]
    config["command"] = [f"/results/{run.run_id}/spec.json"]
    config["volumes"][str(REPO / "benchmarks")] = {"bind": BENCH_MOUNT, "mode": "ro"}
    container = backend.client.containers.create(**config)
    try:
        container.start()
        code = container.wait(timeout=run.timeout)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode().strip().splitlines()
        if code != 0 or not out:
            raise SystemExit(f"bare loop failed (exit {code}): "
                             f"{container.logs().decode()[-2000:]}")
        return json.loads(out[-1])["images_per_s"]
    finally:
        container.remove(force=True)


def harness_run(backend, run, results: ResultsDir, data_dir: str, env: dict, tag: str) -> float:
    run_dir = results.run_dir(f"{run.run_id}-{tag}")
    spec = run.spec_for(backend.dataset_path(run, data_dir))
    spec["run_id"] = run_dir.run_id
    (run_dir.path / "spec.json").write_text(json.dumps(spec))
    run.run_id, original = run_dir.run_id, run.run_id
    try:
        backend.execute(run, run_dir, data_dir, env, lambda event: None)
    finally:
        run.run_id = original
    metrics, problem = read_metrics(run_dir.file("metrics.json"))
    if metrics is None or metrics["status"] != "ok":
        raise SystemExit(f"{tag} harness run failed: {problem or (metrics or {}).get('error')}")
    return metrics["timing"]["images_per_s"]


def describe(values: list[float]) -> str:
    return (f"median {statistics.median(values):8.1f} img/s  CV {cv(values):6.2%}  "
            f"({', '.join(f'{v:.0f}' for v in values)})")


def main() -> int:
    args = parse_args()
    client, problem = connect()
    if client is None:
        raise SystemExit(f"needs a Docker engine ({problem})")
    data_dir = str(datasets.require("fashion-mnist", ("train", "test")))
    docker_backend, local_backend = DockerBackend(client), LocalBackend()
    with tempfile.TemporaryDirectory(prefix="dlbench-overhead-") as tmp:
        runs = planned_runs(args, Path(tmp))
        framework = runs[0].framework
        say = lambda line: None  # noqa: E731
        docker_env = {"kind": "image", **docker_backend.prepare(framework, "cpu", say)}
        local_env = local_backend.prepare(framework, "cpu", say)
        results = ResultsDir.create(Path(tmp) / "results", "overhead")
        found: dict[str, list[float]] = {"bare": [], "docker": [], "local": []}
        for run in runs:
            found["bare"].append(bare_run(docker_backend, run, results.run_dir(run.run_id),
                                          data_dir, docker_env))
            found["docker"].append(harness_run(docker_backend, run, results, data_dir, docker_env, "docker"))
            found["local"].append(harness_run(local_backend, run, results, data_dir, local_env, "local"))
            print(f"repeat {run.spec['repeat'] + 1}: " +
                  "  ".join(f"{k} {v[-1]:.0f}" for k, v in found.items()), flush=True)
    med = {k: statistics.median(v) for k, v in found.items()}
    print(f"\n{args.framework}, batch {args.batch_size}, {args.train_limit} images x {args.epochs} "
          f"epochs, {args.repeats} repeats, intra-op threads {args.intra_op or 'default'} "
          "(steady-state training images/s)")
    for key, label in (("bare", "bare loop in a container"), ("docker", "harness, docker backend"),
                       ("local", "harness, local backend")):
        print(f"  {label:26s} {describe(found[key])}")
    harness_ratio, backend_ratio = med["docker"] / med["bare"], med["docker"] / med["local"]
    print(f"  harness / bare (docker):   {harness_ratio:.4f}  -> overhead {1 - harness_ratio:+.2%} "
          f"({verdict(1 - harness_ratio <= 0.01, 0.01, found['docker'], found['bare'])}, goal <= 1 %)")
    print(f"  docker / local (harness):  {backend_ratio:.4f}  -> difference {backend_ratio - 1:+.2%} "
          f"({verdict(abs(backend_ratio - 1) <= 0.02, 0.02, found['docker'], found['local'])}, "
          "goal within 2 %)")
    return 0


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def verdict(met: bool, goal: float, *samples: list[float]) -> str:
    """A ratio cannot show a 1 % effect when repeats scatter by more than that."""
    noise = max(cv(values) for values in samples)
    if noise > goal:
        return f"inconclusive: repeat-to-repeat CV {noise:.1%} exceeds the {goal:.0%} measured"
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
