"""Bad input through the real `dlbench` command: one line `dlbench: error: <where>: <what>`,
exit 2, no traceback, and nothing created. (Field-by-field suite checks: test_suite.py.)"""
from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.paths import REPO_ROOT
from tests.integration.helpers import dlbench, write_suite

RUN = "name: t\nruns:\n  - {framework: pytorch, api: eager%s}\n"


def assert_one_line_error(proc, *expected: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "\n" not in message and message.startswith("dlbench: error: "), message
    for text in expected:
        assert text in message, message
    return message


@pytest.mark.parametrize("text, expected", [
    ("name: t\nruns: [{framework: pytorch\n", "malformed YAML, line"),
    (RUN % ", bach_size: 64", "runs[0].bach_size: unknown key (did you mean 'batch_size'?)"),
    ("name: t\nruns:\n  - {framework: tensorflw, api: keras}\n",
     "runs[0].framework: unknown framework 'tensorflw' (did you mean 'tensorflow'?)"),
    (RUN % ", workload: resnet50", "runs[0].workload: unknown workload 'resnet50'"),
    (RUN % ", batch_size: 0", "runs[0].batch_size: 0 is less than the minimum of 1"),
    (RUN % ", epochs: 0", "runs[0].epochs: 0 is less than the minimum of 1"),
    (RUN % ", options: {compil: true}", "runs[0].options.compil: pytorch/eager has no option 'compil'"),
    (RUN % ", seed: 4294967296", "runs[0].seed: 4294967296 is greater than the maximum of 4294967295"),
    (RUN % ", learning_rate: .nan", "runs[0].learning_rate: nan is not a finite number"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager}\n  - {framework: pytorch, api: eager}\n",
     "runs[1]: the same run as runs[0]"),
])  # every other kind, for `plan` and `run`: test_hostile_input.py
def test_bad_suite_file(tmp_path, text, expected):
    suite = write_suite(tmp_path, text)
    results = tmp_path / "results"
    proc = dlbench("run", suite, "--backend", "local", "--results", results)
    assert_one_line_error(proc, str(suite), expected)
    assert not results.exists()


def test_missing_dataset_names_it_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DLBENCH_DATA_DIR", raising=False)
    empty_cache = tmp_path / "cache"
    empty_cache.mkdir()
    suite = write_suite(tmp_path, RUN % ", dataset: mnist")
    results = tmp_path / "results"
    proc = dlbench("run", suite, "--backend", "local", "--results", results,
                   env={"DLBENCH_CACHE": str(empty_cache)})
    assert_one_line_error(proc, "dataset mnist is not prepared on this host", str(empty_cache),
                          "dlbench data fetch mnist")
    assert not results.exists()


def test_results_root_that_cannot_be_a_directory(tmp_path, mnist_test_dir):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "mnist").symlink_to(mnist_test_dir)  # the real test split, found first
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    suite = write_suite(tmp_path, RUN % ", dataset: mnist, train_split: test")
    proc = dlbench("run", suite, "--backend", "local", "--results", blocker / "results",
                   env={"DLBENCH_DATA_DIR": str(datasets)})
    assert_one_line_error(proc, f"{blocker}/results: results directory not writable (Not a directory)")
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("args, expected", [
    ((), "run: give either a suite file or --resume RESULTS_DIR"),
    (("suite.yaml", "--resume", "x"), "run: give either a suite file or --resume RESULTS_DIR"),
    (("--resume", "{tmp}/nowhere"), "nowhere: not a dlbench results directory (plan.json missing)"),
])
def test_run_arguments(tmp_path, args, expected):
    proc = dlbench("run", *(a.format(tmp=tmp_path) for a in args))
    assert_one_line_error(proc, expected)


def test_resume_of_a_corrupt_plan(tmp_path):
    (tmp_path / "plan.json").write_text('{"suite": "t", "backend": "local", "runs": [{"run_')
    (tmp_path / "suite.yaml").write_text(RUN % "")
    proc = dlbench("run", "--resume", tmp_path)
    assert_one_line_error(proc, f"{tmp_path}/plan.json: unreadable plan", "run the suite afresh")


def test_resume_with_another_backend(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"suite": "t", "backend": "docker", "runs": []}))
    (tmp_path / "suite.yaml").write_text(RUN % "")
    proc = dlbench("run", "--resume", tmp_path, "--backend", "local")
    assert_one_line_error(proc, "was run with the docker backend; resume it with that one")


def test_bundle_that_fails_verification_names_the_file(tmp_path):
    """`dlbench verify` (orchestrator/bundle.py): exit 1, one line per problem naming the
    file, then the verdict; a path that is no bundle at all is the usual one-line error."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "bundle-small", bundle)
    (bundle / "runs" / "01-pytorch-eager" / "metrics.json").write_text('{"schema_version": 1, "sta')
    proc = dlbench("verify", bundle)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-1] == f"Bundle does NOT verify: {bundle} (2 problem(s))"
    assert all(line.startswith("  runs/01-pytorch-eager/metrics.json: ") for line in lines[:-1])
    assert any("not valid JSON" in line for line in lines)

    proc = dlbench("verify", tmp_path / "nowhere")
    assert_one_line_error(proc, f"{tmp_path}/nowhere: no such bundle")


def test_resume_reruns_only_runs_without_a_result(tmp_path):
    """oom/timeout/failed/killed are findings and stay; `error` and no record are re-run."""
    from orchestrator.execution.resume import pending_runs
    from orchestrator.plan.suite import load_suite
    from orchestrator.results.directory import ResultsDir

    suite_file = tmp_path / "s.yaml"
    suite_file.write_text("name: s\nruns:\n" + "".join(  # a seed each: identical runs are refused
        f"  - {{framework: pytorch, api: eager, seed: {seed}}}\n" for seed in range(7)))
    suite = load_suite(suite_file)
    results = ResultsDir.create(tmp_path / "results", "s")
    outcomes = ["ok", "failed", "oom", "killed", "timeout", "error", None]
    for run, outcome in zip(suite.runs, outcomes):
        run_dir = results.run_dir(run.run_id)
        if outcome:
            run_dir.write_record({"run_id": run.run_id, "outcome": outcome, "backend": "docker",
                                  "started_at": "t", "finished_at": "t", "wall_s": 0.0})
    assert pending_runs(results, suite) == [suite.runs[5].run_id, suite.runs[6].run_id]


def test_every_argument_and_command_has_help_text():
    """`dlbench ... --help` explains everything it lists: no action without a help line."""
    import argparse

    from orchestrator.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                if not action.help:
                    missing.append(f"{path}: the {action.dest} subcommands")
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "dlbench")
    assert not missing, missing


def test_version_comes_from_the_package_metadata():
    from orchestrator.images.context import dlbench_version

    proc = dlbench("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"dlbench {dlbench_version()}\n" and dlbench_version()[0].isdigit()
