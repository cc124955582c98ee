"""Suite `matrix:` expansion (GitHub Actions semantics), run ids, `dlbench plan`, one-line errors."""
import subprocess
import sys
import textwrap

import pytest

from orchestrator.errors import DlbenchError
from orchestrator.paths import REPO_ROOT
from orchestrator.plan import matrix as matrix_mod
from orchestrator.plan.suite import format_plan, load_suite
from orchestrator.results.directory import schema_error


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def ids(suite):
    return [run.run_id for run in suite.runs]


def test_sweep_batch_suite_is_two_frameworks_by_three_batches_by_three_repeats():
    suite = load_suite(REPO_ROOT / "suites" / "sweep-batch.yaml")
    assert len(suite.runs) == 18 and suite.cv_threshold == 0.10
    assert ids(suite)[:4] == ["01-pytorch-eager-bs32-r1", "01-pytorch-eager-bs32-r2",
                              "01-pytorch-eager-bs32-r3", "02-pytorch-eager-bs128-r1"]
    assert ids(suite)[-1] == "06-tensorflow-keras-bs512-r3"
    assert len(set(ids(suite))) == 18
    assert {(r.framework, r.api, r.spec["batch_size"]) for r in suite.runs} == {
        (f, a, b) for f, a in (("pytorch", "eager"), ("tensorflow", "keras")) for b in (32, 128, 512)}
    for run in suite.runs:
        assert schema_error("spec", run.spec_for("/data/fashion-mnist")) is None
        assert run.monitor_interval == 0.5


def test_exclude_and_include_follow_github_actions(tmp_path):
    suite = load_suite(write(tmp_path, """
        name: m
        defaults: {resources: {memory: 4g}}
        runs:
          - {framework: pytorch, api: eager}
        matrix:
          framework: [pytorch/eager, tensorflow]      # 'tensorflow' alone: its image's default API
          batch_size: [32, 512]
          exclude:
            - {framework: tensorflow/keras, batch_size: 32}
          include:
            - {batch_size: 512, timeout: 99}            # fits existing combinations: merged
            - {framework: pytorch/eager, batch_size: 8192, resources: {memory: 1g}}  # new one
    """))
    assert ids(suite) == ["01-pytorch-eager", "02-pytorch-eager-bs32", "03-pytorch-eager-bs512",
                          "04-tensorflow-keras-bs512", "05-pytorch-eager-bs8192"]
    by_id = {r.run_id: r for r in suite.runs}
    assert by_id["03-pytorch-eager-bs512"].timeout == 99 and by_id["04-tensorflow-keras-bs512"].timeout == 99
    assert by_id["02-pytorch-eager-bs32"].timeout == 3600
    assert by_id["05-pytorch-eager-bs8192"].resources["memory"] == "1g"
    assert by_id["02-pytorch-eager-bs32"].resources["memory"] == "4g"
    assert "4 combination(s), 1 excluded, 1 added by include -> 4 configuration(s)" in suite.matrix_description


def test_thread_device_and_lr_axes_reach_the_spec_and_the_id(tmp_path):
    suite = load_suite(write(tmp_path, """
        name: m
        defaults: {framework: pytorch, api: eager, repeats: 2}
        matrix:
          intra_op_threads: [1, 2]
          inter_op_threads: [1]
          learning_rate: [0.001, 0.01]
    """))
    assert ids(suite)[:3] == ["01-pytorch-eager-t1-lr0.001-r1", "01-pytorch-eager-t1-lr0.001-r2",
                              "02-pytorch-eager-t1-lr0.01-r1"]
    last = suite.runs[-1].spec
    assert last["threads"] == {"intra_op": 2, "inter_op": 1} and last["learning_rate"] == 0.01
    assert len(suite.runs) == 8


def test_plan_shows_the_expansion_and_its_size():
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan",
                           str(REPO_ROOT / "suites" / "sweep-batch.yaml")],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("suite sweep-batch: 18 run(s)")
    assert lines[1].startswith("matrix: framework (2) × batch_size (3) = 6 combination(s)")
    assert "06-tensorflow-keras-bs512-r3" in proc.stdout


@pytest.mark.parametrize("matrix, message", [
    ("{framework: [pytorch], batch_sise: [32]}", "matrix.batch_sise: unknown key (did you mean 'batch_size'?)"),
    ("{framework: [pytorch], batch_size: [32], exclude: [{batchsize: 32}]}",
     "matrix.exclude[0].batchsize: unknown key (did you mean 'batch_size'?)"),
    ("{framework: [pytorch], batch_size: [32], exclude: [{epochs: 2}]}",
     "matrix.exclude[0].epochs: not an axis of this matrix (axes: framework, batch_size)"),
    ("{framework: [pytorch], batch_size: [32], exclude: [{batch_size: 33}]}",
     "matrix.exclude[0]: matches no combination"),
    ("{framework: [pytorch], batch_size: []}", "matrix.batch_size: [] should be non-empty"),
    ("{framework: [pytorh]}", "framework: unknown framework 'pytorh' (did you mean 'pytorch'?)"),
    ("{batch_size: [32]}", "no framework or api"),
    ("{framework: [pytorch], include: [{batch_size: 32, tmeout: 5}]}",
     "matrix.include[0].tmeout: unknown key (did you mean 'timeout'?)"),
])
def test_bad_matrix_is_one_line(tmp_path, matrix, message):
    path = write(tmp_path, f"name: m\nmatrix: {matrix}\n")
    with pytest.raises(DlbenchError) as err:
        load_suite(path)
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


def test_suite_needs_runs_or_matrix(tmp_path):
    with pytest.raises(DlbenchError, match="a suite needs 'runs', a 'matrix', or both"):
        load_suite(write(tmp_path, "name: m\n"))


def test_cli_bad_matrix_key_is_one_line_no_traceback(tmp_path):
    path = write(tmp_path, "name: m\nmatrix: {framework: [pytorch], batchsize: [32]}\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", str(path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"dlbench: error: {path}: matrix.batchsize: unknown key "
                           "(did you mean 'batch_size'?)\n")


def test_plan_table_of_a_plain_suite_has_no_matrix_line():
    suite = load_suite(REPO_ROOT / "suites" / "quick.yaml")
    assert "matrix:" not in format_plan(suite)


@pytest.mark.parametrize("matrix, message", [
    ("{framework: [pytorch/eager], batch_size: [32, 64], exclude: [{batch_size: 32}, {batch_size: 64}]}",
     "matrix: expands to no combination (every one is excluded, and no include adds one)"),
    ("{exclude: []}", "matrix: expands to no combination (it has no axes, and no include adds one)"),
    ("{framework: [pytorch/eager], learning_rate: [0.1, .inf]}",
     "matrix.learning_rate[1]: inf is not a finite number"),
    ("{framework: [pytorch/eager], batch_size: [32], include: [{batch_size: 32, options: {compil: true}}]}",
     "matrix combination (framework=pytorch/eager, batch_size=32, options={'compil': True}).options.compil: "
     "pytorch/eager has no option 'compil'"),
])
def test_matrix_that_expands_to_nothing_or_holds_what_a_run_rejects(tmp_path, matrix, message):
    path = write(tmp_path, f"name: m\nmatrix: {matrix}\n")
    with pytest.raises(DlbenchError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_large_matrix_needs_allow_large_and_a_huge_one_is_never_built(tmp_path, monkeypatch):
    values = lambda n: "[" + ", ".join(str(i) for i in range(1, n + 1)) + "]"  # noqa: E731
    path = write(tmp_path, f"name: m\nmatrix: {{framework: [pytorch/eager], batch_size: {values(40)}, "
                           f"epochs: {values(30)}}}\n")   # 1,200 runs
    with pytest.raises(DlbenchError, match=r"expands to 1,200 runs \(more than 1,000\); .* --allow-large"):
        load_suite(path)
    assert len(load_suite(path, allow_large=True).runs) == 1200
    built = []
    monkeypatch.setattr(matrix_mod.itertools, "product", lambda *a: built.append(a) or iter(()))
    path = write(tmp_path, f"name: m\nmatrix: {{framework: [pytorch/eager], batch_size: {values(500)}, "
                           f"epochs: {values(500)}, learning_rate: [0.1, 0.2, 0.3]}}\n")
    with pytest.raises(DlbenchError, match="expands to 750,000 combinations before exclude, more than "
                                           "dlbench runs from one suite"):
        load_suite(path, allow_large=True)
    assert built == []   # refused from the axes' lengths, before any combination was made


def test_repeats_count_towards_the_bound(tmp_path):
    path = write(tmp_path, "name: m\ndefaults: {repeats: 600}\nmatrix: {framework: [pytorch/eager, tensorflow/keras]}\n")
    with pytest.raises(DlbenchError, match="expands to 1,200 runs"):
        load_suite(path)
