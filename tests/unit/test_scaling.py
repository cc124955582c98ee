"""Data-parallel scaling (orchestrator.analysis.scaling) and the report's Scaling section.

No worker writes a `parallel` object yet, so each results directory here is GENERATED: the
runs of tests/fixtures/bundle-small (a real suite run: PyTorch eager and TensorFlow Keras),
copied as 1-worker and 2-worker runs whose metrics.json carries `parallel` as
/work/notes/parallel-interface.md documents it, with throughputs chosen so that every
figure is exact. The bundle is sealed and verified like a suite run's, so the generated
files also match the metrics and spec schemas.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import cast

import jinja2
import pytest

from orchestrator import report
from orchestrator.analysis import scaling, stats
from orchestrator.analysis.groups import Topology, ok_groups, topology
from orchestrator.analysis.summary import summarize
from orchestrator.results import bundle
from orchestrator.results.directory import load_runs

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bundle-small"
TEMPLATES = {"pytorch": "01-pytorch-eager", "tensorflow": "02-tensorflow-keras"}
MECHANISM = {"pytorch": "torchrun + DistributedDataParallel (gloo)",
             "tensorflow": "MultiWorkerMirroredStrategy (ring)"}


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _write(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _parallel(framework: str, workers: int, scaling_: str, per_worker: int, spread: float | None,
              slowest: int, comm_s: float | None, rank_train_s: list[float]) -> dict:
    """metrics.json's `parallel` object, field for field as the interface note lists it."""
    ranks = [{"rank": r, "node": "node-0", "local_rank": r, "cpus": [r], "status": "ok", "error": None,
              "epoch_train_s": [t / 2, t / 2], "train_total_s": t, "images_per_s": 256 / t,
              "loss": 0.5, "test_loss": 0.45, "communication_s": comm_s, "peak_rss_mb": 800.0}
             for r, t in enumerate(rank_train_s)]
    source = "DDP logging: avg_backward_comm_time" if comm_s is not None else \
        f"not exposed by {framework}: its collective ops are timed with the step"
    return {"workers_per_node": workers, "nodes": 1, "world_size": workers, "scaling": scaling_,
            "per_worker_batch_size": per_worker, "global_batch_size": per_worker * workers,
            "learning_rate_rule": "none", "base_learning_rate": 0.001, "learning_rate": 0.001,
            "mechanism": MECHANISM[framework], "launcher": "dlbench", "hosts": ["127.0.0.1"],
            "dropped_train_samples": 0, "ranks": ranks, "train_s_spread": spread, "slowest_rank": slowest,
            "communication": {"time_s": comm_s, "source": source}}


class Suite:
    """A results directory being generated: runs added one by one, then sealed."""

    def __init__(self, tmp_path: Path, name: str = "scaling"):
        self.path = tmp_path / name
        self.path.mkdir()
        for document in ("system.json", "images.json", "suite.yaml"):
            shutil.copy(FIXTURE / document, self.path / document)
        self.plan = {**_read(FIXTURE / "plan.json"), "suite": name, "runs": []}
        self.planned = {r["run_id"]: r for r in _read(FIXTURE / "plan.json")["runs"]}
        (self.path / "runs").mkdir()

    def add(self, run_id: str, framework: str, images_per_s: float, *, batch: int = 128,
            workers: int | None = None, scaling_: str = "weak", status: str = "ok", epochs: int = 2,
            repeat: int = 0, spread: float | None = 0.02, slowest: int = 1, comm_s: float | None = 1.2,
            rank_train_s: tuple[float, ...] = (5.9, 6.0)) -> None:
        """One run like the fixture's `framework` run; workers=None: no `parallel` at all."""
        template = FIXTURE / "runs" / TEMPLATES[framework]
        spec, metrics, record = (_read(template / f) for f in ("spec.json", "metrics.json", "run.json"))
        spec.update(run_id=run_id, batch_size=batch, epochs=epochs, repeat=repeat)
        per_worker = batch
        if workers is not None:
            spec["parallel"] = {"workers_per_node": workers, "nodes": 1, "scaling": scaling_,
                                "learning_rate_rule": "none"}
            per_worker = batch // workers if scaling_ == "strong" else batch
        metrics["run_id"] = run_id
        metrics["hyperparameters"].update(batch_size=per_worker, epochs=epochs)
        if status == "ok":
            metrics["timing"]["images_per_s"] = images_per_s
        else:  # what a failed parallel run leaves: no timing, maybe no `parallel`
            metrics.update(status=status, error="rank 1 exited with code 1")
            for key in ("timing", "epochs", "test", "model", "steady_state"):
                metrics.pop(key, None)
        if workers is not None and status == "ok":
            metrics["schema_version"] = 2
            metrics["hyperparameters"].update(global_batch_size=per_worker * workers, base_learning_rate=0.001)
            metrics["parallel"] = _parallel(framework, workers, scaling_, per_worker, spread, slowest, comm_s,
                                            list(rank_train_s)[:workers] + [6.0] * (workers - len(rank_train_s)))
        record.update(run_id=run_id, batch_size=batch, outcome=status,
                      exit_code=0 if status == "ok" else 1,
                      message=None if status == "ok" else "rank 1 exited with code 1")
        run_dir = self.path / "runs" / run_id
        run_dir.mkdir()
        for name, document in (("spec.json", spec), ("metrics.json", metrics), ("run.json", record)):
            _write(run_dir / name, document)
        planned = copy.deepcopy(self.planned[TEMPLATES[framework]])
        planned.update(run_id=run_id, spec={**spec, "dataset": {**spec["dataset"], "path": None}})
        self.plan["runs"].append(planned)

    def seal(self) -> Path:
        """What a suite run's last steps do: plan, summary.json, the report, the seal."""
        _write(self.path / "plan.json", self.plan)
        _write(self.path / "summary.json", summarize(load_runs(self.path), 0.1))
        (self.path / "report.html").write_text(report.render(report.load(self.path)), encoding="utf-8")
        bundle.seal(self.path)
        return self.path


def scaling_suite(tmp_path: Path) -> Path:
    """1-worker and 2-worker runs of PyTorch and TensorFlow, weak and strong; a strong run with
    no 1-worker run of its global batch; a failed repeat and a failed entry; a 1-worker run of
    another configuration (3 epochs) that must not be taken for a baseline."""
    suite = Suite(tmp_path)
    for k, rate in enumerate((990.0, 1000.0, 1010.0), start=1):  # T1 = 1000 at batch 128
        suite.add(f"01-pytorch-eager-w1-r{k}", "pytorch", rate, batch=128, repeat=k - 1)
    suite.add("02-pytorch-eager-w1-bs64", "pytorch", 600.0, batch=64)  # T1 = 600 at batch 64
    weak = ((1800.0, 0.03, 0, 1.5), (1700.0, 0.05, 1, 0.75), (1900.0, 0.01, 0, 2.25))
    for k, (rate, spread, slowest, comm) in enumerate(weak, start=1):
        suite.add(f"03-pytorch-eager-w2-weak-r{k}", "pytorch", rate, batch=128, workers=2, repeat=k - 1,
                  spread=spread, slowest=slowest, comm_s=comm, rank_train_s=(5.9, 6.0))
    # a failed repeat: its (absurd) throughput must count nowhere
    suite.add("03-pytorch-eager-w2-weak-r4", "pytorch", 99999.0, batch=128, workers=2, repeat=3, status="failed")
    suite.add("04-pytorch-eager-w2-strong", "pytorch", 900.0, batch=64, workers=2, scaling_="strong",
              spread=None, comm_s=None)
    suite.add("05-pytorch-eager-w4-weak", "pytorch", 3000.0, batch=128, workers=4, status="failed")
    suite.add("06-pytorch-eager-w1-e3", "pytorch", 5000.0, batch=128, epochs=3)
    # TensorFlow: its 1-worker run has a `parallel` object of world size 1 (workers: 1 in a matrix)
    suite.add("07-tensorflow-keras-w1", "tensorflow", 500.0, batch=128, workers=1)
    suite.add("08-tensorflow-keras-w2-weak", "tensorflow", 600.0, batch=128, workers=2, spread=0.1,
              slowest=0, comm_s=None, rank_train_s=(4.0, 3.6))
    suite.add("09-tensorflow-keras-w2-strong-bs256", "tensorflow", 700.0, batch=256, workers=2,
              scaling_="strong", spread=0.04, slowest=1, comm_s=0.5, rank_train_s=(4.0, 5.0))
    return suite.seal()


@pytest.fixture(scope="module")
def parallel_suite(tmp_path_factory) -> Path:
    """Made once: the tests only read it."""
    return scaling_suite(tmp_path_factory.mktemp("parallel"))


def by_entry(rows: list) -> dict[str, dict]:
    """Scaling rows by suite entry (run id less its -rK)."""
    return {stats.group_id(row["run_ids"][0]): row for row in rows}


# ---------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------

def test_generated_bundle_verifies(parallel_suite):
    """The generated metrics match the metrics schema, and summary.json (with its scaling
    rows) agrees with what dlbench derives from the runs' files."""
    assert bundle.verify(parallel_suite) == []


def test_weak_scaling_against_the_same_per_worker_batch(parallel_suite):
    rows = by_entry(scaling.analyse(load_runs(parallel_suite)))
    weak = rows["03-pytorch-eager-w2-weak"]
    assert weak["run_ids"] == [f"03-pytorch-eager-w2-weak-r{k}" for k in (1, 2, 3)]  # the failed r4: not counted
    assert weak["baseline_run_ids"] == [f"01-pytorch-eager-w1-r{k}" for k in (1, 2, 3)]  # not the 3-epoch run
    assert (weak["workers"], weak["nodes"], weak["scaling"]) == (2, 1, "weak")
    assert (weak["per_worker_batch_size"], weak["global_batch_size"]) == (128, 256)
    assert weak["images_per_s"] == 1800.0          # median of 1800, 1700, 1900
    assert weak["baseline_images_per_s"] == 1000.0  # median of 990, 1000, 1010
    assert weak["ideal_images_per_s"] == 2000.0
    assert weak["efficiency"] == 0.9 and weak["speedup"] == 1.8
    assert weak["train_s_spread"] == 0.05 and weak["slowest_rank"] == 1  # the repeat with the largest spread
    assert weak["communication_share"] == 0.25      # median of 1.5/6, 0.75/6, 2.25/6 (the slowest rank: 6 s)
    assert weak["communication_source"] == "DDP logging: avg_backward_comm_time"
    assert weak["mechanism"] == MECHANISM["pytorch"]
    assert weak["reason"] is None


def test_strong_scaling_against_the_same_global_batch(parallel_suite):
    rows = by_entry(scaling.analyse(load_runs(parallel_suite)))
    strong = rows["04-pytorch-eager-w2-strong"]
    assert (strong["per_worker_batch_size"], strong["global_batch_size"]) == (32, 64)
    assert strong["baseline_run_ids"] == ["02-pytorch-eager-w1-bs64"]
    assert strong["baseline_images_per_s"] == 600.0 and strong["ideal_images_per_s"] == 1200.0
    assert strong["efficiency"] == 0.75 and strong["speedup"] == 1.5
    assert strong["train_s_spread"] is None and strong["slowest_rank"] == 1
    assert strong["communication_share"] is None
    assert strong["communication_source"].startswith("not exposed by pytorch")


def test_world_size_one_parallel_run_is_a_baseline(parallel_suite):
    tf = by_entry(scaling.analyse(load_runs(parallel_suite)))["08-tensorflow-keras-w2-weak"]
    assert tf["baseline_run_ids"] == ["07-tensorflow-keras-w1"]
    assert tf["efficiency"] == 0.6 and tf["speedup"] == 1.2
    assert tf["train_s_spread"] == 0.1 and tf["slowest_rank"] == 0


def test_missing_baseline_is_explained(parallel_suite):
    row = by_entry(scaling.analyse(load_runs(parallel_suite)))["09-tensorflow-keras-w2-strong-bs256"]
    assert row["reason"] == scaling.NO_BASELINE == "no 1-worker run of this configuration in the suite"
    assert row["baseline_run_ids"] == [] and row["baseline_images_per_s"] is None
    assert row["efficiency"] is None and row["speedup"] is None and row["ideal_images_per_s"] is None
    assert row["images_per_s"] == 700.0
    assert row["communication_share"] == 0.1         # 0.5 s over the slowest rank's 5 s
    assert row["per_worker_batch_size"] == 128 and row["global_batch_size"] == 256


def test_rows_failed_entries_and_order(parallel_suite):
    rows = scaling.analyse(load_runs(parallel_suite))
    # the wholly failed 4-worker entry gives no row; 1-worker runs are baselines, not rows
    assert [(r["label"], r["workers"], r["run_ids"][0]) for r in rows] == [
        ("pytorch/eager weak 128 per worker", 2, "03-pytorch-eager-w2-weak-r1"),
        ("pytorch/eager strong global batch 64", 2, "04-pytorch-eager-w2-strong"),
        ("tensorflow/keras weak 128 per worker", 2, "08-tensorflow-keras-w2-weak"),
        ("tensorflow/keras strong global batch 256", 2, "09-tensorflow-keras-w2-strong-bs256")]
    json.dumps(rows)  # plain JSON: summary.json carries them


def test_summary_json_carries_scaling_and_workers(parallel_suite):
    summary = _read(parallel_suite / "summary.json")
    assert [r["efficiency"] for r in summary["scaling"]] == [0.9, 0.75, 0.6, None]
    entries = {e["run_id"]: e for e in summary["runs"]}
    assert (entries["03-pytorch-eager-w2-weak-r4"]["workers"], entries["03-pytorch-eager-w2-weak-r4"]["scaling"]) \
        == (2, "weak")  # a failed run is placed by its spec
    assert "workers" not in entries["01-pytorch-eager-w1-r1"] and "workers" not in entries["07-tensorflow-keras-w1"]
    assert "workers" in (parallel_suite / "summary.csv").read_text().splitlines()[0].split(",")


def test_runs_differing_only_in_workers_are_different_configurations(parallel_suite):
    groups = {g.key: g for g in ok_groups(load_runs(parallel_suite))}
    one, two = groups["01-pytorch-eager-w1"], groups["03-pytorch-eager-w2-weak"]
    assert len(one.rows) == 3 and len(two.rows) == 3
    assert one.topology == Topology() and two.topology == Topology(2, 1, "weak")
    assert one.identity != two.identity and one.identity[:7] == two.identity[:7]
    # (01: and b128: the suite varies the batch, and 06 is pytorch/eager b128 on one worker too)
    assert one.label == "01: pytorch/eager b128 1 worker" and two.label == "pytorch/eager b128 2 workers weak"
    # workers: 1 in a matrix is the same experiment as a run without `parallel`
    assert groups["07-tensorflow-keras-w1"].topology == Topology()


@pytest.mark.parametrize("row, expected", [
    ({"spec": {}, "metrics": {}}, Topology()),
    ({"spec": {"parallel": {"workers_per_node": 2, "nodes": 2}}, "metrics": None}, Topology(4, 2, "weak")),
    ({"spec": {"parallel": {"workers_per_node": 1, "nodes": 1, "scaling": "strong"}}}, Topology()),
    ({"spec": {"parallel": {"workers_per_node": 8, "nodes": 1}},
      "metrics": {"parallel": {"world_size": 8, "nodes": 1, "scaling": "strong"}}}, Topology(8, 1, "strong")),
], ids=["none", "spec-only", "one-worker", "metrics-first"])
def test_topology(row, expected):
    assert topology(row) == expected


def test_no_parallel_runs_no_rows():
    rows = load_runs(FIXTURE)
    assert scaling.analyse(rows) == []
    assert "scaling" not in summarize(rows, 0.1)


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

def test_report_shows_scaling_section_chart_and_numbers(parallel_suite):
    html = (parallel_suite / "report.html").read_text()
    section = html[html.index('<h2 id="scaling">'):html.index('<h2 id="failed">')]
    assert '<a href="#scaling">Scaling</a>' in html
    assert '<figure class="chart" id="figure-scaling">' in section and "<svg" in section
    assert "ideal: S × T1 (1-worker rate)" in section and "workers (world size S)" in section
    for text in ("pytorch/eager weak 128 per worker", "1,800", "1,000", "2,000", "1.80×", "90.0 %", "5.0 %",
                 "25.0 %", "1.50×", "75.0 %", "1.20×", "60.0 %", "10.0 %", "700", "128 / 256", "32 / 64",
                 MECHANISM["pytorch"], "no 1-worker run of this configuration in the suite",
                 "communication time not exposed by tensorflow"):
        assert text in section, text
    assert "99,999" not in html  # the failed repeat counts nowhere
    # the chart's lines are dashed for the ideal only: one per line that has a baseline
    assert section.count("stroke-dasharray") == 3 + 1  # 3 lines with a baseline, the legend's sample


def test_report_renders_the_same_bytes_twice(parallel_suite):
    assert report.render(report.load(parallel_suite)) == (parallel_suite / "report.html").read_text()


def test_suite_without_parallel_runs_has_no_scaling_section(tmp_path):
    suite = Suite(tmp_path, "plain")
    suite.add("01-pytorch-eager", "pytorch", 1000.0)
    suite.add("02-tensorflow-keras", "tensorflow", 500.0)
    html = (suite.seal()).joinpath("report.html").read_text()
    assert 'id="scaling"' not in html and "figure-scaling" not in html and "#scaling" not in html
    assert "Scaling" not in html


def test_a_suite_without_parallel_runs_renders_the_bytes_it_did_before(monkeypatch):
    """The Scaling section leaves not even a line when it has nothing: the page is the one
    the layout without it renders, so bundles sealed before it still re-render byte for byte."""
    source = (report.TEMPLATES / "report.html.j2").read_text()
    without = source.replace('{% if scaling %}<a href="#scaling">Scaling</a>{% endif %}', "")
    without = without[:without.index("{# Scaling,")] + without[without.index('{% include "sections/failed'):]
    assert "scaling" not in without.lower()
    context = report.load(FIXTURE)
    with_section = report.render(context)
    environment = report.jinja_environment()
    environment.loader = jinja2.ChoiceLoader([jinja2.DictLoader({"report.html.j2": without}),
                                              cast(jinja2.BaseLoader, environment.loader)])
    monkeypatch.setattr(report, "jinja_environment", lambda: environment)
    assert report.render(context) == with_section
