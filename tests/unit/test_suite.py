"""Suite files: expansion into runs, and one-line errors for every kind of bad input."""
import subprocess
import sys
import textwrap

import pytest

from orchestrator.errors import DlbenchError
from orchestrator.paths import REPO_ROOT
from orchestrator.plan.suite import format_plan, load_suite
from orchestrator.results.directory import schema_error


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_quick_suite_expands_to_one_run_per_framework():
    suite = load_suite(REPO_ROOT / "suites" / "quick.yaml")
    assert [(r.framework, r.api) for r in suite.runs] == [("pytorch", "eager"), ("tensorflow", "keras")]
    for run in suite.runs:
        assert run.flavour == "cpu" and run.dataset == "fashion-mnist"
        spec = run.spec_for("/data/fashion-mnist")
        assert schema_error("spec", spec) is None
        assert spec["batch_size"] == 128 and spec["learning_rate"] == 0.001 and spec["epochs"] == 1


def test_gpu_suite_uses_cuda_flavour():
    suite = load_suite(REPO_ROOT / "suites" / "quick-gpu.yaml")
    assert suite.devices == {"gpu"}
    assert {r.flavour for r in suite.runs} == {"cuda"}


def test_run_settings_override_defaults_and_repeats_get_ids(tmp_path):
    suite = load_suite(write(tmp_path, """
        name: t
        defaults: {epochs: 2, resources: {cpus: 1.5}, threads: {intra_op: 2}}
        runs:
          - {framework: pytorch, api: eager, epochs: 3, repeats: 2, resources: {memory: 2g}}
          - {framework: tensorflow, api: keras}
    """))
    ids = [r.run_id for r in suite.runs]
    assert ids == ["01-pytorch-eager-r1", "01-pytorch-eager-r2", "02-tensorflow-keras"]
    first = suite.runs[0]
    assert first.spec["epochs"] == 3 and first.spec["repeat"] == 0 and suite.runs[1].spec["repeat"] == 1
    assert first.resources == {"cpus": 1.5, "cpuset": None, "memory": "2g"}  # merged, not replaced
    assert suite.runs[2].spec["epochs"] == 2 and suite.runs[2].spec["threads"]["intra_op"] == 2


def test_plan_table_lists_every_run(tmp_path):
    suite = load_suite(REPO_ROOT / "suites" / "quick.yaml")
    table = format_plan(suite)
    assert "suite quick: 2 run(s)" in table
    assert "pytorch/eager" in table and "tensorflow/keras" in table


@pytest.mark.parametrize("text, expected", [
    ("name: t\nruns: [{framework: pytorch, api: eager}\n", "malformed YAML, line"),
    ("name: t\nruns:\n  - {framwork: pytorch, api: eager}\n", "runs[0].framwork: unknown key (did you mean 'framework'?)"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager, bach_size: 3}\n", "did you mean 'batch_size'?"),
    ("name: t\nruns:\n  - {framework: pytroch, api: eager}\n", "runs[0].framework: unknown framework 'pytroch' (did you mean 'pytorch'?)"),
    ("name: t\nruns:\n  - {framework: pytorch, api: graph}\n", "runs[0].api: pytorch has no API 'graph'"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager, workload: resnet}\n", "unknown workload 'resnet'"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager, batch_size: 0}\n", "runs[0].batch_size: 0 is less than the minimum of 1"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager, epochs: -1}\n", "runs[0].epochs: -1 is less than the minimum of 1"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager, device: tpu}\n", "runs[0].device: 'tpu' is not one of"),
    ("name: t\nruns: []\n", "runs: [] should be non-empty"),
    ("runs:\n  - {framework: pytorch, api: eager}\n", "'name' is a required property"),
    ("- just\n- a list\n", "a suite must be a mapping"),
])
def test_bad_suite_is_one_line_error_naming_the_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(DlbenchError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message
    assert "\n" not in message


def test_missing_suite_file(tmp_path):
    with pytest.raises(DlbenchError, match="cannot read suite file"):
        load_suite(tmp_path / "nope.yaml")


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "name: t\nruns:\n  - {framework: pytorch, api: eager, batch_size: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", str(path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("dlbench: error: ") and "batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_plan_prints_without_running(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan",
                           str(REPO_ROOT / "suites" / "quick.yaml")],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "01-pytorch-eager" in proc.stdout and "02-tensorflow-keras" in proc.stdout


def test_cli_output_into_a_closed_pipe_is_quiet():
    """`dlbench plan BIG | head -1`: the reader leaves early; no 'internal error' line."""
    reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "plan", "--json",
                           str(REPO_ROOT / "suites" / "input-bound.yaml")],
                          stdout=reader.stdin, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    reader.stdin.close()
    reader.wait()
    assert proc.stderr == "" and proc.returncode == 141
