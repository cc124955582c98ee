"""Data-parallel parts without a framework: which rows each rank trains on, CPU sets, the
world a launcher describes, the learning-rate rules, the plan's refusals, and how the
ranks' results become one run's metrics (contract/ranks.py)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from contract import ranks
from contract.schemas import load_schema
from orchestrator.errors import DlbenchError
from orchestrator.plan.rules import Target
from orchestrator.plan.suite import load_suite
from workloads import harness
from workloads.parallel import World, WorldError, shard_order, split_cpus, world_from_env

REAL_METRICS = Path(__file__).resolve().parent.parent / "fixtures" / "real-metrics" / "pytorch-eager.json"


def test_the_ranks_batches_put_together_are_the_one_worker_batches():
    order = np.random.default_rng(3).permutation(1000)
    b, size = 16, 3
    shards = [shard_order(order, World(rank=r, size=size, local_size=size), b) for r in range(size)]
    steps = 1000 // (b * size)
    assert all(len(s) == steps * b for s in shards)
    for k in range(steps):
        together = np.concatenate([s[k * b:(k + 1) * b] for s in shards])
        assert (together == order[k * b * size:(k + 1) * b * size]).all()
    assert set(np.concatenate(shards)) == set(order[:steps * b * size])  # the tail is dropped
    assert (shard_order(order, World(), b) == order).all()  # one worker: everything, in order


def test_cpus_split_into_disjoint_groups_and_too_many_workers_is_one_line():
    assert split_cpus([3, 0, 1, 2, 4], 2) == [[0, 1, 2], [3, 4]]
    assert split_cpus([0, 1], 2) == [[0], [1]]
    with pytest.raises(WorldError, match="3 workers on this node but only 2 CPU"):
        split_cpus([0, 1], 3)


def test_world_from_torchrun_and_from_slurm_environments():
    w = world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "x"})
    assert (w.rank, w.size, w.local_rank, w.coordinator, w.launcher) == (1, 2, 1, "127.0.0.1:1234", "torchrun")
    s = world_from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                        "SLURM_NNODES": "2", "DLBENCH_HOSTS": "10.0.0.1,10.0.0.2", "MASTER_PORT": "99"})
    assert (s.rank, s.local_size, s.node_rank, s.nodes, s.coordinator) == (3, 2, 1, 2, "10.0.0.1:99")
    assert s.worker_address(3) == "10.0.0.2:103" and s.launcher == "srun"
    assert world_from_env({}) == World()  # a plain run: one worker
    with pytest.raises(WorldError, match="RANK"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(WorldError, match="inconsistent"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def _spec(**parallel) -> dict:
    return {"batch_size": 128, "learning_rate": 0.01, "threads": {"intra_op": None},
            "parallel": {"workers_per_node": 2, "nodes": 2, "scaling": "weak",
                         "learning_rate_rule": "none", **parallel}}


@pytest.mark.parametrize("parallel, batch, lr", [
    ({}, 128, 0.01), ({"scaling": "strong"}, 32, 0.01),
    ({"learning_rate_rule": "linear"}, 128, 0.04), ({"learning_rate_rule": "sqrt"}, 128, 0.02)])
def test_per_worker_batch_and_learning_rate_rule(parallel, batch, lr):
    spec = harness.worker_spec(_spec(**parallel), World(size=4, local_size=2))
    assert spec["batch_size"] == batch and spec["learning_rate"] == pytest.approx(lr)
    assert spec["base_learning_rate"] == 0.01


def _suite(tmp_path, body: str, target: Target | None = None):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndefaults: {synthetic: true}\n" + body)
    return load_suite(path, target=target)


def test_workers_nodes_scaling_are_matrix_axes_and_reach_the_spec(tmp_path):
    suite = _suite(tmp_path, "matrix:\n  framework: [pytorch/eager]\n  workers: [1, 2]\n  scaling: [weak, strong]\n",
                   Target(frozenset({0, 1})))
    got = [(r.run_id, r.spec["parallel"]["workers_per_node"], r.spec["parallel"]["scaling"]) for r in suite.runs]
    assert got == [("01-pytorch-eager-w1-weak", 1, "weak"), ("02-pytorch-eager-w1-strong", 1, "strong"),
                   ("03-pytorch-eager-w2-weak", 2, "weak"), ("04-pytorch-eager-w2-strong", 2, "strong")]
    plain = _suite(tmp_path, "runs: [{framework: pytorch, api: eager}]\n")
    assert "parallel" not in plain.runs[0].spec and "dropout" not in plain.runs[0].spec


def test_more_workers_than_cores_or_an_uneven_strong_split_is_refused_in_one_line(tmp_path):
    with pytest.raises(DlbenchError, match=r"parallel.workers: 3 workers per node but 2 CPU\(s\)"):
        _suite(tmp_path, "runs: [{framework: pytorch, api: eager, parallel: {workers: 3}}]\n", Target(frozenset({0, 1})))
    with pytest.raises(DlbenchError, match=r"cpuset 0.*workers would share cores"):
        _suite(tmp_path, "runs: [{framework: pytorch, api: eager, parallel: {workers: 2}, resources: {cpuset: '0'}}]\n",
               Target(frozenset({0, 1})))
    with pytest.raises(DlbenchError, match="unevenly; give a multiple of 4"):
        _suite(tmp_path, "runs: [{framework: pytorch, api: eager, batch_size: 30, parallel: {workers: 2, nodes: 2, "
                         "scaling: strong}}]\n", Target(frozenset({0, 1})))
    with pytest.raises(DlbenchError, match="2 GPU"):
        _suite(tmp_path, "runs: [{framework: pytorch, api: eager, device: gpu, gpus: [0, 1], parallel: {workers: 4}}]\n")
    # more workers than this host's cores on other nodes: a warning, not an error
    suite = _suite(tmp_path, "runs: [{framework: pytorch, api: eager, parallel: {workers: 3, nodes: 2}}]\n",
                   Target(frozenset({0, 1})))
    assert any("fine if the nodes have them" in w for w in suite.warnings)


def _rank(rank: int, status: str = "ok", train_s=(2.0, 1.0), finished="2026-01-01T00:00:01", **extra) -> dict:
    return {"schema_version": 2, "run_id": "r", "status": status, "error": None if status == "ok" else f"E{rank}",
            "framework": {"name": "pytorch", "api": "eager", "version": "2"}, "workload": "mnist_cnn",
            "device": {"type": "cpu", "name": "cpu"}, "started_at": "2026-01-01T00:00:00", "finished_at": finished,
            "dataset": {"name": "x", "train_samples": 100, "test_samples": 50},
            "hyperparameters": {"batch_size": 10, "epochs": 2, "learning_rate": 0.1, "optimizer": "sgd", "seed": 1},
            "epochs": [{"epoch": i + 1, "train_s": t, "images_per_s": 100 / t, "loss": 1.0 + rank, "accuracy": 0.5,
                        "test_loss": 2.0 + rank, "test_accuracy": 0.25, "test_s": 0.5} for i, t in enumerate(train_s)],
            "test": {"loss": 2.0 + rank, "accuracy": 0.25},
            "timing": {"train_total_s": sum(train_s), "images_per_s": 200 / sum(train_s), "test_s": 0.5},
            "steady_state": {"images_per_s_median": 60.0, "images_per_s_min": 50.0, "images_per_s_max": 70.0},
            "memory": {"peak_rss_mb": 100.0 + rank},
            "rank": {"rank": rank, "local_rank": rank, "node": "n1", "cpus": [rank], "mechanism": "DDP",
                     "communication": {"time_s": 0.3, "source": "s"}, "dropped_train_samples": 4}, **extra}


SPEC = {"batch_size": 10, "learning_rate": 0.1,
        "parallel": {"workers_per_node": 2, "nodes": 1, "scaling": "weak", "learning_rate_rule": "none"}}


def test_merged_figures_are_global_and_the_slowest_rank_sets_each_epoch():
    m = ranks.merge(SPEC, [_rank(0), _rank(1, train_s=(2.5, 1.0))], {}, launcher="dlbench", hosts=["h"])
    assert m["status"] == "ok" and "rank" not in m
    assert [e["train_s"] for e in m["epochs"]] == [2.5, 1.0]
    assert m["timing"]["train_total_s"] == 3.5 and m["timing"]["images_per_s"] == pytest.approx(400 / 3.5)
    assert m["epochs"][0]["loss"] == 1.5 and m["test"]["loss"] == 2.5       # means over ranks
    assert m["dataset"]["train_samples"] == 200 and m["steady_state"]["images_per_s_median"] == 120.0
    p = m["parallel"]
    assert (p["slowest_rank"], p["world_size"], p["global_batch_size"]) == (1, 2, 20)
    assert p["train_s_spread"] == pytest.approx(0.5 / 3.25)
    assert [r["cpus"] for r in p["ranks"]] == [[0], [1]] and m["memory"]["peak_rss_mb"] == 101.0
    real = json.loads(REAL_METRICS.read_text())  # a real run's metrics, made parallel
    whole = {**real, "parallel": m["parallel"], "schema_version": 2}
    jsonschema.validate(whole, load_schema("metrics"))


def test_the_failed_rank_is_the_one_that_died_not_the_one_that_lost_its_peer():
    lost_peer = _rank(0, "failed", finished="2026-01-01T00:00:05")
    m = ranks.merge(SPEC, [lost_peer, None], {}, launcher="dlbench", hosts=["h"], exit_codes={0: 1, 1: -9})
    assert m["status"] == "failed" and m["parallel"]["failed_rank"] == 1
    assert m["error"] == "rank 1: died without a result (killed by SIGKILL)"
    # both failed by themselves: the earlier failure is the cause; its status (oom) is the run's
    m = ranks.merge(SPEC, [_rank(0, "failed", finished="2026-01-01T00:00:05"),
                           _rank(1, "oom", finished="2026-01-01T00:00:03")], {}, launcher="x", hosts=["h"])
    assert (m["status"], m["error"]) == ("oom", "rank 1 on n1: E1")
    # a rank that failed and one the launcher stopped: the failed one
    m = ranks.merge(SPEC, [_rank(0, "stopped"), _rank(1, "failed")], {}, launcher="x", hosts=["h"])
    assert m["parallel"]["failed_rank"] == 1 and m["error"].startswith("rank 1")
    # two ranks died without a result: the one whose end was seen first
    m = ranks.merge(SPEC, [None, None], {"status": "failed"}, launcher="dlbench", hosts=["h"],
                    exit_codes={1: -9, 0: -6})
    assert m["error"] == "rank 1: died without a result (killed by SIGKILL)"
    # nothing from anyone: the base, failed, naming rank 0
    m = ranks.merge(SPEC, [None, None], {"run_id": "r", "status": "failed"}, launcher="torchrun", hosts=["h"])
    assert m["status"] == "failed" and "rank 0: died without a result" in m["error"]
