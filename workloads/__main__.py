"""`python -m workloads run ...`: the command every backend (and a user by hand) runs.

Two ways to say what to run:
  run --spec /results/<run_id>/spec.json          what the orchestrator writes
  run --dataset fashion-mnist --epochs 1 ...      by hand; the image's defaults fill the rest
  run --workload cifar10_cnn --dataset cifar10 --synthetic    generated data, no files
Results go to --out (default: the spec's directory, or /results/<run_id>).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from contract.jsonio import write_json_atomic
from contract.registry import PRECISION_POLICIES

from . import harness, launcher, parallel


def _spec_from_flags(args) -> dict:
    framework = args.framework or os.environ.get("DLBENCH_FRAMEWORK")
    api = args.api or os.environ.get("DLBENCH_API")
    if not framework or not api:
        raise harness.SpecError("--framework and --api are needed outside a dlbench image "
                                "(images set DLBENCH_FRAMEWORK / DLBENCH_API)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    spec = {
        "schema_version": harness.SCHEMA_VERSION,
        "run_id": args.run_id or f"{framework}-{api}-{args.workload}-{stamp}",
        "framework": framework, "api": api, "workload": args.workload,
        "dataset": {"name": args.dataset, "synthetic": args.synthetic,
                    "path": None if args.synthetic else
                    args.dataset_path or os.path.join("/data", args.dataset),
                    "train_split": args.train_split,
                    "train_limit": args.train_limit, "test_limit": args.test_limit},
        "batch_size": args.batch_size, "epochs": args.epochs,
        "learning_rate": args.learning_rate, "optimizer": args.optimizer, "seed": args.seed,
        "device": args.device, "precision": args.precision, "warmup_steps": args.warmup_steps,
        "window_steps": args.window_steps,
        "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
        "options": dict(_option(o) for o in args.option or []),
    }
    if args.no_dropout:
        spec["dropout"] = False
    if args.workers:
        spec["parallel"] = {"workers_per_node": args.workers, "nodes": 1, "scaling": args.scaling,
                            "learning_rate_rule": args.lr_rule}
    return spec


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as JSON when it is JSON (true, 3, "x"), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise harness.SpecError(f"--option {text!r}: expected KEY=VALUE, e.g. compile=true")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _load_spec_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise harness.SpecError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise harness.SpecError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workloads")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="one worker of a parallel run (started by its launcher: "
                            "`run` itself, torchrun or srun)")
    worker.add_argument("--spec", required=True, help="the run's spec.json")
    worker.add_argument("--out", help="the run's directory (default: the spec's)")
    run = sub.add_parser("run", help="train and evaluate one run, write metrics.json")
    run.add_argument("--spec", help="spec.json written by the orchestrator")
    run.add_argument("--out", help="directory for spec.json and metrics.json")
    run.add_argument("--framework")
    run.add_argument("--api")
    run.add_argument("--workload", default="mnist_cnn")
    run.add_argument("--dataset", default="fashion-mnist")
    run.add_argument("--dataset-path", help="default: /data/<dataset>")
    run.add_argument("--synthetic", action="store_true",
                     help="seeded generated data of the dataset's shapes (no files needed)")
    run.add_argument("--train-split", default="train", choices=["train", "test"])
    run.add_argument("--train-limit", type=int)
    run.add_argument("--test-limit", type=int)
    run.add_argument("--batch-size", type=int, default=128)
    run.add_argument("--epochs", type=int, default=1)
    run.add_argument("--learning-rate", type=float, default=0.001)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    run.add_argument("--precision", default="fp32", choices=list(PRECISION_POLICIES),
                     help="fp32 (true FP32, TF32 off), tf32, bf16 or fp16 (mixed)")
    run.add_argument("--warmup-steps", type=int, default=3)
    run.add_argument("--window-steps", type=int, default=20,
                     help="steps per steady-state timing window (default 20)")
    run.add_argument("--workers", type=int, help="data-parallel worker processes (default 1)")
    run.add_argument("--scaling", choices=["weak", "strong"], default="weak",
                     help="weak: --batch-size per worker (default); strong: the global batch")
    run.add_argument("--lr-rule", choices=["none", "linear", "sqrt"], default="none",
                     help="learning rate x 1 (default), x workers or x sqrt(workers)")
    run.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    run.add_argument("--no-dropout", action="store_true", help="dropout rates 0 (correctness checks)")
    run.add_argument("--intra-op-threads", type=int)
    run.add_argument("--inter-op-threads", type=int)
    run.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="framework option, e.g. compile=true, hybridize=false (repeatable)")
    run.add_argument("--run-id")
    return parser


def _worker(args) -> int:
    """A worker: the rank its launcher gave it (environment), its rank file in --out/ranks."""
    try:
        spec = harness.validate_spec(_load_spec_file(args.spec))
        world = parallel.world_from_env()
    except (harness.SpecError, parallel.WorldError) as exc:
        print(f"workloads worker: error: {exc}", file=sys.stderr)
        return harness.EXIT_USAGE
    return harness.run(spec, args.out or os.path.dirname(os.path.abspath(args.spec)), world)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker(args)
    try:
        raw = _load_spec_file(args.spec) if args.spec else _spec_from_flags(args)
        spec = harness.validate_spec(raw)
    except harness.SpecError as exc:
        print(f"workloads: error: {exc}", file=sys.stderr)
        return harness.EXIT_USAGE
    out_dir = args.out or (os.path.dirname(os.path.abspath(args.spec)) if args.spec
                           else os.path.join("/results", spec["run_id"]))
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not args.spec:
            write_json_atomic(os.path.join(out_dir, "spec.json"), raw)
    except OSError as exc:
        print(f"workloads: error: {out_dir}: not writable ({exc.strerror}); mount a writable "
              "directory there or pass --out", file=sys.stderr)
        return harness.EXIT_USAGE
    if harness.world_size(spec) > 1:  # this process launches and watches the workers
        spec_path = args.spec or os.path.join(out_dir, "spec.json")
        return launcher.launch(spec, os.path.abspath(spec_path), out_dir)
    return harness.run(spec, out_dir)


if __name__ == "__main__":
    sys.exit(main())
