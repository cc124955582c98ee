"""Start, watch and stop the workers of a parallel run on this node, then merge their results.

`python -m workloads run --spec S` of a spec with more than one worker comes here. One
process per worker, in this container (or virtualenv): PyTorch's through torchrun, the
others through `python -m workloads worker` started here. Every worker pins itself to its
own CPUs (workloads/parallel.py). When one worker ends badly the others are stopped
(SIGTERM, then SIGKILL), so a dead rank never leaves the rest waiting in a collective;
the run's timeout bounds everything else. This process writes the run's metrics.json from
the ranks' files (contract/ranks.py): it is the one process alive on every path.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from contract.jsonio import write_json_atomic
from contract.ranks import merge, read_ranks
from contract.registry import PARALLEL, parallel_problem

from . import harness

STOP_GRACE_S = 15.0   # SIGTERM -> SIGKILL for workers that do not end by themselves
POLL_S = 0.2
EXIT_BY_STATUS = {"ok": harness.EXIT_OK, "oom": harness.EXIT_OOM,
                  "unsupported": harness.EXIT_UNSUPPORTED}


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """A base port with `count` free ports from it (rendezvous, then one per worker)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1]
        if base + count >= 65536:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


def worker_commands(spec: dict, spec_path: str, out_dir: str, port: int) -> tuple[str, list[list[str]]]:
    """(launcher name, commands): one torchrun for PyTorch, else one command per worker."""
    workers = spec["parallel"]["workers_per_node"]
    worker = ["-m", "workloads", "worker", "--spec", spec_path, "--out", out_dir]
    if PARALLEL[(spec["framework"], spec["api"])]["launcher"] == "torchrun":
        return "torchrun", [[sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
                             f"--nproc-per-node={workers}", "--master-addr=127.0.0.1",
                             f"--master-port={port}", "--max-restarts=0", "--monitor-interval=0.5",
                             *worker]]
    return "dlbench", [[sys.executable, *worker] for _ in range(workers)]


def launch(spec: dict, spec_path: str, out_dir: str) -> int:
    """Run every worker of `spec` on this node; metrics.json in out_dir either way."""
    size = harness.world_size(spec)
    problem = parallel_problem(spec["framework"], spec["api"], size)
    if problem:  # the harness writes the `unsupported` outcome, naming the reason
        return harness.run(spec, out_dir)
    if spec["parallel"]["nodes"] > 1:
        return _refuse(spec, out_dir, f"parallel.nodes: {spec['parallel']['nodes']} nodes need a "
                       "launcher on every node: run the suite with --backend slurm")
    port = free_ports(size + 1)
    name, commands = worker_commands(spec, spec_path, out_dir, port)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "DLBENCH_BASE_PORT": str(port), "DLBENCH_HOSTS": "127.0.0.1",
           "DLBENCH_LAUNCHER": name, "WORLD_SIZE": str(size), "LOCAL_WORLD_SIZE": str(size),
           "GLOO_SOCKET_IFNAME": "lo"}  # one node: loopback (a container has no other network)
    harness.emit("parallel", workers=size, launcher=name, port=port)
    procs = []
    for rank, command in enumerate(commands):
        if name == "torchrun":  # torchrun sets these for its workers itself
            worker_env = {k: v for k, v in env.items() if k not in ("WORLD_SIZE", "LOCAL_WORLD_SIZE")}
        else:
            worker_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0"}
        procs.append(subprocess.Popen(command, env=worker_env))
    exit_codes, interrupted = supervise(procs, per_rank=name != "torchrun")
    ranks = read_ranks(out_dir, size)
    base = harness.base_metrics(spec, harness.now_iso())
    metrics = merge(spec, ranks, base, launcher=name, hosts=[socket.gethostname()],
                    exit_codes=exit_codes)
    if interrupted and metrics["status"] != "ok":  # stopped from outside, not by a rank
        metrics["status"], metrics["error"] = "failed", "interrupted"
    metrics["finished_at"] = harness.now_iso()
    metrics_path = _write_outcome(metrics, out_dir)
    for line in harness.closing_lines(metrics, metrics_path):
        print(line, flush=True)
    return EXIT_BY_STATUS.get(metrics["status"], harness.EXIT_FAILED)


def supervise(procs: list[subprocess.Popen], per_rank: bool) -> tuple[dict[int, int | None], bool]:
    """Wait for every worker; the first to end badly gets the others stopped. A SIGTERM or
    SIGINT here (docker stop, Ctrl-C, scancel) stops them all too. Exit codes by rank, in
    the order the ends were seen (none for torchrun, whose one process stands for every rank)."""
    stopping: list[float] = []
    signalled: list[int] = []

    def stop(signum=None, frame=None):
        if signum is not None:
            signalled.append(signum)
        if not stopping:
            stopping.append(time.monotonic())
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    ended: list[int] = []  # ranks in the order their end was seen: the first failure is the cause
    try:
        while [proc.poll() for proc in procs].count(None):  # every one polled, every time
            ended += [r for r, proc in enumerate(procs) if proc.returncode is not None and r not in ended]
            if any(proc.returncode not in (None, 0) for proc in procs):
                stop()
            if stopping and time.monotonic() - stopping[0] > STOP_GRACE_S:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ended += [r for r in range(len(procs)) if r not in ended]
    codes = {rank: procs[rank].returncode for rank in ended} if per_rank else {}
    return codes, bool(signalled)


def _write_outcome(metrics: dict, out_dir: str) -> str:
    """The run's metrics.json and its closing events; the file's path."""
    metrics_path = os.path.join(out_dir, "metrics.json")
    write_json_atomic(metrics_path, metrics)
    if metrics["status"] != "ok":
        harness.emit("failed", status=metrics["status"], error=metrics["error"])
    harness.emit("done", status=metrics["status"], metrics=metrics_path)
    return metrics_path


def _refuse(spec: dict, out_dir: str, error: str) -> int:
    metrics = harness.base_metrics(spec, harness.now_iso())  # status "failed"
    metrics["error"] = error
    _write_outcome(metrics, out_dir)
    print(f"workloads: error: {error}", file=sys.stderr)
    return harness.EXIT_FAILED
