"""Data-parallel runs: who this worker is (`World`), which CPUs it owns, which rows it trains on.

A parallel run is S = workers_per_node x nodes worker processes, started by a launcher
(workloads/launcher.py on one node, torchrun for PyTorch, srun under Slurm). Every launcher
describes the worker through the environment, in torchrun's names (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT) or Slurm's
(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, ...), plus DLBENCH_HOSTS (one
address per node, for frameworks that list every worker) and DLBENCH_BASE_PORT.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import numpy as np


class WorldError(Exception):
    """The launcher's environment does not describe a usable worker (names the variable)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node_rank: int = 0
    nodes: int = 1
    coordinator: str = "127.0.0.1:29500"     # host:port of rank 0's rendezvous
    hosts: tuple[str, ...] = ("127.0.0.1",)  # one address per node
    base_port: int = 29500                   # TF_CONFIG lists worker r at base_port + 1 + r
    cpus: tuple[int, ...] = field(default_factory=tuple)  # this worker's CPUs, once pinned
    launcher: str = "none"

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def worker_address(self, rank: int) -> str:
        """host:port for frameworks that address every worker (TensorFlow's cluster spec)."""
        return f"{self.hosts[rank // self.local_size]}:{self.base_port + 1 + rank}"

    def to_dict(self) -> dict:
        return {"rank": self.rank, "size": self.size, "local_rank": self.local_rank,
                "local_size": self.local_size, "node_rank": self.node_rank, "nodes": self.nodes,
                "coordinator": self.coordinator, "hosts": list(self.hosts),
                "cpus": list(self.cpus), "launcher": self.launcher}


def _int(env: dict, name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise WorldError(f"environment variable {name}: missing or not an integer "
                         f"({env.get(name)!r}); start workers through the run's launcher") from None


def world_from_env(env: dict | None = None) -> World:
    """This worker as its launcher described it; a single worker when nothing says otherwise."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:            # our launcher, torchrun
        rank, size = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local_rank = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        local_size = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else size
        node_rank = _int(env, "GROUP_RANK") if "GROUP_RANK" in env else rank // local_size
        launcher = env.get("DLBENCH_LAUNCHER", "torchrun" if "TORCHELASTIC_RUN_ID" in env else "dlbench")
    elif "SLURM_PROCID" in env and "DLBENCH_HOSTS" in env:  # one Slurm task per worker
        rank, size = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local_rank, node_rank = _int(env, "SLURM_LOCALID"), _int(env, "SLURM_NODEID")
        local_size = size // max(1, _int(env, "SLURM_NNODES"))
        launcher = "srun"
    else:
        return World()
    hosts = tuple(h for h in env.get("DLBENCH_HOSTS", "127.0.0.1").split(",") if h)
    addr = env.get("MASTER_ADDR", hosts[0])
    port = _int(env, "MASTER_PORT") if "MASTER_PORT" in env else 29500
    base_port = _int(env, "DLBENCH_BASE_PORT") if "DLBENCH_BASE_PORT" in env else port
    if not 0 <= rank < size or not 0 <= local_rank < local_size or local_size * len(hosts) != size:
        raise WorldError(f"rank {rank} of {size} (local {local_rank} of {local_size}, "
                         f"{len(hosts)} host(s) in DLBENCH_HOSTS): inconsistent worker layout")
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size,
                 node_rank=node_rank, nodes=len(hosts), coordinator=f"{addr}:{port}",
                 hosts=hosts, base_port=base_port, launcher=launcher)


def split_cpus(cpus: list[int], workers: int) -> list[list[int]]:
    """The node's CPUs in `workers` disjoint contiguous groups (sizes differ by at most one),
    so that workers on one node never share a core."""
    cpus = sorted(cpus)
    if workers > len(cpus):
        raise WorldError(f"{workers} workers on this node but only {len(cpus)} CPU(s) "
                         f"({','.join(map(str, cpus))}); ask for fewer workers_per_node")
    size, extra = divmod(len(cpus), workers)
    groups, start = [], 0
    for w in range(workers):
        end = start + size + (1 if w < extra else 0)
        groups.append(cpus[start:end])
        start = end
    return groups


def pin_worker(world: World) -> World:
    """Pin this process to its share of the CPUs it may use (the container's or job's set)."""
    if not world.parallel or not hasattr(os, "sched_setaffinity"):
        return world
    if world.launcher == "srun":  # Slurm bound each task to its own CPUs already
        return World(**{**world.__dict__, "cpus": tuple(sorted(os.sched_getaffinity(0)))})
    mine = split_cpus(sorted(os.sched_getaffinity(0)), world.local_size)[world.local_rank]
    os.sched_setaffinity(0, mine)
    return World(**{**world.__dict__, "cpus": tuple(mine)})


def shard_order(order: np.ndarray, world: World, batch_size: int) -> np.ndarray:
    """This rank's rows of an epoch's order: the k-th batch of `batch_size` rows of rank r is
    rows [r*b, (r+1)*b) of the k-th global batch of size*b rows; the tail that does not
    fill a global batch is dropped so that every rank runs the same steps."""
    if not world.parallel:
        return order
    global_batch = batch_size * world.size
    steps = len(order) // global_batch
    return np.ascontiguousarray(
        order[:steps * global_batch].reshape(steps, world.size, batch_size)[:, world.rank].reshape(-1))


def interface_of(address: str) -> str | None:
    """The network interface holding `address` on this machine (Linux), or None. Gloo binds
    to the interface named in GLOO_SOCKET_IFNAME, else to whatever this host's name resolves
    to, which on a node with several networks may not be the one its peers reach."""
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(packed[20:24]) == address:
                return name
    return None


def network_environment(world: World) -> dict:
    """Environment a multi-node worker needs before its framework loads: gloo on the interface
    that holds this node's address in DLBENCH_HOSTS (unless the user chose one)."""
    if world.nodes <= 1 or "GLOO_SOCKET_IFNAME" in os.environ:
        return {}
    try:
        address = socket.gethostbyname(world.hosts[world.node_rank])
    except OSError:
        return {}
    name = interface_of(address)
    if name:
        os.environ["GLOO_SOCKET_IFNAME"] = name
    return {"GLOO_SOCKET_IFNAME": name} if name else {}
