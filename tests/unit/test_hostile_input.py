"""Hostile or broken input through the real `dlbench` command: what the run would reject is
rejected by the plan, one line naming the field; no file hangs it, crashes it or makes it
write outside; nothing a suite or bundle holds reaches the terminal as a control character.
(Field-by-field unit checks: test_suite.py, test_matrix.py; the one-line helper: test_bad_input.py.)"""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from contract.datasets import DATASETS
from orchestrator.paths import REPO_ROOT
from orchestrator.plan.rules import MAX_RUNS
from tests.integration.helpers import dlbench, write_suite
from tests.unit.test_bad_input import assert_one_line_error

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "bundle-small"
RUN = "name: t\nruns:\n  - {framework: pytorch, api: eager%s}\n"
HUNDRED = f"[{','.join(map(str, range(1, 101)))}]"
RAW_CONTROLS = [bytes([c]) for c in (*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f)] + \
    ["\u009b".encode(), "\u202e".encode()]   # C1 CSI, right-to-left override


def no_raw_controls(proc) -> None:
    out = (proc.stdout + proc.stderr).encode()
    found = [c for c in RAW_CONTROLS if c in out]
    assert not found, (found, out[-500:])


# --------------------------------------------------------------- the plan rejects what the run would

@pytest.mark.parametrize("text, expected", [
    # non-finite numbers, wherever a number is taken
    (RUN % ", learning_rate: .nan", "runs[0].learning_rate: nan is not a finite number"),
    ("name: t\ndefaults: {timeout: .inf}\nruns:\n  - {framework: pytorch, api: eager}\n",
     "defaults.timeout: inf is not a finite number"),
    (RUN % ", resources: {cpus: -.inf}", "runs[0].resources.cpus: -inf is not a finite number"),
    ("name: t\nmatrix: {framework: [pytorch/eager], learning_rate: [0.1, .nan]}\n",
     "matrix.learning_rate[1]: nan is not a finite number"),
    # seeds a framework's seeding takes: 0 ... 2**32-1
    (RUN % ", seed: 4294967296", "runs[0].seed: 4294967296 is greater than the maximum of 4294967295"),
    (RUN % ", seed: -1", "runs[0].seed: -1 is less than the minimum of 0"),
    # framework options the framework file does not read, or of the wrong type
    (RUN % ", options: {compil: true}",
     "runs[0].options.compil: pytorch/eager has no option 'compil' (did you mean 'compile'?)"),
    (RUN % ", options: {compile: 'yes'}", "runs[0].options.compile: 'yes' is not of type 'boolean'"),
    ("name: t\ndefaults: {options: {jit_compile: true}}\nruns: [{framework: jax, api: flax}]\n",
     "defaults.options.jit_compile: jax/flax has no option 'jit_compile' (it takes no options)"),
    # device: gpu for a framework without a cuda image
    ("name: t\nruns: [{framework: chainer, api: eager, device: gpu}]\n",
     "runs[0].device: chainer has no cuda image (Chainer 7.8.1 needs CuPy 7.x"),
    # limits beyond the split: they would limit nothing
    (RUN % ", train_limit: 60001", "runs[0].train_limit: 60,001 is more than the 60,000 samples"),
    (RUN % ", train_split: test, train_limit: 10001", "of fashion-mnist's test split"),
    (RUN % ", test_limit: 10001", "runs[0].test_limit: 10,001 is more than the 10,000 samples"),
    # resources Docker refuses on any machine
    (RUN % ", resources: {memory: '0'}", "runs[0].resources.memory: '0' would mean no limit"),
    (RUN % ", resources: {memory: 1k}", "runs[0].resources.memory: '1k' is less than Docker's smallest"),
    (RUN % ", resources: {memory: \"8g\\n\"}", "runs[0].resources.memory: '8g\\n' is not a size"),
    (RUN % ", resources: {cpuset: '1-0'}", "runs[0].resources.cpuset: the range 1-0 runs backwards"),
    (RUN % ", resources: {cpus: 0.001}", "runs[0].resources.cpus: 0.001 is less than the minimum of 0.01"),
    (RUN % ", resources: {cpus: 1.5, cpuset: '0'}",
     "runs[0].resources.cpus: 1.5 CPUs on a cpuset of 1 (0) limits nothing"),
    (RUN % ", timeout: 1.0e+12", "runs[0].timeout: 1000000000000.0 is greater than the maximum"),
    (RUN % ", threads: {intra_op: 100000}", "runs[0].threads.intra_op: 100000 is greater than the maximum"),
    # JSON Schema's integer 2.0: range() and the frameworks take no such thing
    (RUN % ", repeats: 2.0", "runs[0].repeats: 2.0 is not of type 'integer'"),
    (RUN % ", batch_size: 64.0", "runs[0].batch_size: 64.0 is not of type 'integer'"),
    # duplicate runs: identical apart from the repeat index
    ("name: t\nruns:\n  - {framework: pytorch, api: eager}\n  - {framework: pytorch, api: eager, seed: 42}\n",
     "runs[1]: the same run as runs[0] (identical settings); use repeats: N"),
    ("name: t\nruns: [{framework: pytorch, api: eager, batch_size: 32}]\n"
     "matrix: {framework: [pytorch/eager], batch_size: [32, 64]}\n",
     "matrix combination (framework=pytorch/eager, batch_size=32): the same run as runs[0]"),
    # YAML that says one thing twice, or values no JSON document holds
    ("name: t\nruns:\n  - framework: pytorch\n    api: eager\n    framework: tensorflow\n",
     "line 5, column 5: duplicate key 'framework' (first at line 3)"),
    ("name: t\nname: u\nruns: [{framework: pytorch, api: eager}]\n", "line 2, column 1: duplicate key 'name'"),
    ("name: t\ndescription: 2024-01-01\nruns: [{framework: pytorch, api: eager}]\n",
     "description: a date is not a value a suite takes"),
    (RUN % ", options: {on: true}", "runs[0].options.True: the key True is not a name"),
    # a name that is not one safe path component
    ('name: "t\\n"\nruns: [{framework: pytorch, api: eager}]\n', "name: 't\\n' is not one safe file name"),
    ('name: "a/b"\nruns: [{framework: pytorch, api: eager}]\n', "name: 'a/b' is not one safe file name"),
    ("name: " + "a" * 65 + "\nruns: [{framework: pytorch, api: eager}]\n", "is not one safe file name"),
    # a matrix that expands to nothing, or to more runs than a person meant
    ("name: t\nmatrix: {framework: [pytorch/eager], batch_size: [32], exclude: [{batch_size: 32}]}\n",
     "matrix: expands to no combination (every one is excluded"),
    ("name: t\nruns: [{framework: pytorch, api: eager}]\nmatrix: {}\n", "matrix: expands to no combination"),
    (f"name: t\ndefaults: {{repeats: {MAX_RUNS + 1}}}\nruns: [{{framework: pytorch, api: eager}}]\n",
     f"expands to {MAX_RUNS + 1:,} runs (more than {MAX_RUNS:,}); check the axes and repeats, "
     "or give --allow-large"),
    (f"name: t\nmatrix: {{framework: [pytorch/eager], batch_size: {HUNDRED}, epochs: {HUNDRED}, "
     f"learning_rate: [{','.join(f'0.{i:03d}' for i in range(1, 101))}]}}\n",
     "matrix: expands to 1,000,000 combinations before exclude, more than dlbench runs from one suite"),
])
def test_plan_rejects_what_the_run_would_reject(tmp_path, text, expected):
    suite = write_suite(tmp_path, text)
    assert_one_line_error(dlbench("plan", suite), str(suite), expected)


@pytest.mark.parametrize("text, expected", [
    (RUN % ", options: {compil: true}", "runs[0].options.compil: pytorch/eager has no option"),
    ("name: t\nruns:\n  - {framework: pytorch, api: eager}\n  - {framework: pytorch, api: eager}\n",
     "runs[1]: the same run as runs[0]"),
    (RUN % ", resources: {cpus: 100000}", "runs[0].resources.cpus: 100000 CPUs is more than the"),
])
def test_run_rejects_them_too_before_anything_starts(tmp_path, text, expected):
    suite = write_suite(tmp_path, text)
    results = tmp_path / "results"
    proc = dlbench("run", suite, "--backend", "local", "--results", results)
    assert_one_line_error(proc, str(suite), expected)
    assert not results.exists()


@pytest.mark.parametrize("resources, expected", [
    ("{cpus: 100000}", "runs[0].resources.cpus: 100000 CPUs is more than the"),
    ("{cpuset: '0,9000'}", "runs[0].resources.cpuset: CPU 9000 is not one this host can give a run"),
])
def test_cpus_beyond_this_host_are_an_error_here_and_a_warning_for_another_host(tmp_path, resources,
                                                                                expected):
    """Every backend runs on this host today, so `plan` checks as `run` does; a suite written
    for a bigger machine is planned here with --other-host (a warning line, exit 0)."""
    suite = write_suite(tmp_path, RUN % f", resources: {resources}")
    assert_one_line_error(dlbench("plan", suite), expected)
    proc = dlbench("plan", suite, "--other-host")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"dlbench: warning: {suite}: {expected}") and proc.stderr.count("\n") == 1
    assert "fine if the suite runs on a machine that has them" in proc.stderr
    assert "01-pytorch-eager" in proc.stdout


def test_a_batch_larger_than_the_training_set_is_a_warning_line(tmp_path):
    suite = write_suite(tmp_path, "name: t\ndefaults: {batch_size: 512}\n"
                                  "runs: [{framework: pytorch, api: eager, train_limit: 100}]\n")
    proc = dlbench("plan", suite)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"dlbench: warning: {suite}: defaults.batch_size: 512 is more than the 100 "
                           "training samples (train_limit): every epoch is a single batch of 100\n")
    mnist_test = DATASETS["mnist"].test
    suite = write_suite(tmp_path, f"name: t\nruns: [{{framework: pytorch, api: eager, dataset: mnist, "
                                  f"train_split: test, batch_size: {mnist_test + 1}}}]\n")
    proc = dlbench("plan", suite)
    assert proc.returncode == 0 and "(mnist's test split)" in proc.stderr, proc.stderr


def test_allow_large_confirms_a_large_suite(tmp_path):
    suite = write_suite(tmp_path, f"name: t\ndefaults: {{repeats: {MAX_RUNS + 1}}}\n"
                                  "runs: [{framework: pytorch, api: eager}]\n")
    proc = dlbench("plan", suite, "--allow-large")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"suite t: {MAX_RUNS + 1} run(s)")


# --------------------------------------------------------------- hostile suite files

def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """Nested aliases inside a mapping value: 9 levels of 10 stand for 10^9 strings. Before,
    `plan` ran for minutes; now aliases are refused when the first anchor is read."""
    lines = ["name: t", "runs: [{framework: pytorch, api: eager}]",
             'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines.append("defaults: {options: {compile: *a9}}")  # the bomb inside a mapping value
    suite = write_suite(tmp_path, "\n".join(lines) + "\n")
    started = time.monotonic()
    proc = dlbench("plan", suite, timeout=60)
    assert time.monotonic() - started < 30
    assert_one_line_error(proc, str(suite), "line 3, column 5: anchor &a0: a suite may not use "
                                            "YAML anchors or aliases")


def test_a_suite_path_that_is_no_file_never_blocks(tmp_path):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)                        # no writer: a plain open() would wait for ever
    for path, expected in ((fifo, "is not a regular file"), ("/dev/zero", "is not a regular file"),
                           (tmp_path, "is a directory")):
        assert_one_line_error(dlbench("plan", path, timeout=30), f"{path}: {expected}")


@pytest.mark.parametrize("content, expected", [
    (b"name: t\ndescription: caf\xe9\nruns: [{framework: pytorch, api: eager}]\n",
     "not UTF-8 text (byte 24: 0xe9)"),
    (b"name: t\nruns: [{framework: pytorch, api: eager, options: {compile: " + b"[" * 5000 + b"]" * 5000
     + b"}}]\n", "nested more than 32 levels deep"),
    (b"name: t\ndescription: " + b"x" * (2 << 20) + b"\nruns: [{framework: pytorch, api: eager}]\n",
     "more than 1024 KiB: not a suite file"),
    (b"name: t\nruns: [{framework: pytorch, api: eager}]\nx: \x1b[31m\n", "malformed YAML"),
])
def test_broken_suite_files_are_one_line_naming_the_file(tmp_path, content, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(content)
    proc = dlbench("plan", suite, timeout=60)
    assert_one_line_error(proc, str(suite), expected)
    no_raw_controls(proc)


# --------------------------------------------------------------- output paths

def bundle_copy(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(FIXTURE, bundle)
    return bundle


def no_temporary_files(*directories) -> None:
    for directory in directories:
        left = [p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
        assert not left, (directory, left)


UNWRITABLE = "/proc"   # not writable even by root (a chmod-ed directory is, to root)


@pytest.mark.parametrize("command, expected", [
    (("report", "{bundle}", "-o", "{tmp}/missing/report.html"),
     "{tmp}/missing/report.html: the directory {tmp}/missing does not exist"),
    (("report", "{bundle}", "-o", f"{UNWRITABLE}/report.html"), f"{UNWRITABLE}/report.html: "),
    (("report", "{bundle}", "-o", "{tmp}"), "{tmp}: is a directory"),
    (("report", "{bundle}", "-o", "{tmp}/a-file/report.html"), "{tmp}/a-file is not a directory"),
    (("report", "{bundle}", "-o", "/dev/null"), "/dev/null: not a regular file"),  # never replaced
    (("pack", "{bundle}", "-o", "{tmp}/missing/b.tar.gz"), "{tmp}/missing/b.tar.gz: the directory"),
    (("pack", "{bundle}", "-o", f"{UNWRITABLE}/b.tar.gz"), f"{UNWRITABLE}/b.tar.gz: "),
    (("compare", "{bundle}", "{bundle}", "--html", "{tmp}/missing/c.html"), "{tmp}/missing/c.html: the directory"),
    (("compare", "{bundle}", "{bundle}", "--html", f"{UNWRITABLE}/c.html"), f"{UNWRITABLE}/c.html: "),
])
def test_output_where_it_cannot_go_is_one_line_and_leaves_nothing(tmp_path, command, expected):
    bundle = bundle_copy(tmp_path)
    (tmp_path / "a-file").write_text("x")
    fill = {"bundle": bundle, "tmp": tmp_path}
    proc = dlbench(*(part.format(**fill) for part in command))
    assert_one_line_error(proc, expected.format(**fill))
    if command[0] != "pack":
        assert proc.stdout == ""  # refused before the work of rendering or comparing
    no_temporary_files(tmp_path, bundle)
    assert not list(REPO_ROOT.glob(".dlbench-*.tmp"))


def test_output_is_written_whole_with_a_plain_file_mode(tmp_path):
    bundle = bundle_copy(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert dlbench("report", bundle, "-o", out / "r.html").returncode == 0
    assert dlbench("compare", bundle, bundle, "--html", out / "c.html").returncode == 0
    assert dlbench("pack", bundle, "-o", out / "b.tar.gz").returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.tar.gz", "c.html", "r.html"]
    umask = os.umask(0)
    os.umask(umask)
    assert {(p.stat().st_mode & 0o777) for p in out.iterdir()} == {0o666 & ~umask}


# --------------------------------------------------------------- bundles of the wrong shape

@pytest.mark.parametrize("rel, content, expected", [
    ("plan.json", [], "plan.json: does not match the plan schema: (top level): [] is not of type 'object'"),
    ("runs/01-pytorch-eager/metrics.json", "TIMING", "runs/01-pytorch-eager/metrics.json: does not match"),
    ("summary.json", {}, "summary.json: does not match the summary schema"),
    ("runs/01-pytorch-eager/run.json", b"\xff{}", "runs/01-pytorch-eager/run.json: not valid JSON"),
    ("system.json", b"[" * 100000, "system.json: not valid JSON"),
])
def test_bundle_json_of_the_wrong_shape_is_one_line_for_report_and_compare(tmp_path, rel, content,
                                                                           expected):
    bundle = bundle_copy(tmp_path)
    target = bundle / rel
    if content == "TIMING":
        metrics = json.loads(target.read_text())
        metrics["timing"] = "fast"          # a string where an object is expected
        content = metrics
    target.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    assert_one_line_error(dlbench("report", bundle, "-o", tmp_path / "r.html"), f"{bundle}: {expected}")
    assert_one_line_error(dlbench("compare", FIXTURE, bundle), f"{bundle}: {expected}")
    proc = dlbench("verify", bundle)      # verify lists it, among the changed files: exit 1
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert any(line.strip().startswith(expected) for line in proc.stdout.splitlines()), proc.stdout
    assert not (tmp_path / "r.html").exists()


def test_non_utf8_bundle_json_names_the_file_and_the_byte(tmp_path):
    bundle = bundle_copy(tmp_path)
    (bundle / "images.json").write_bytes(b'{"a": "caf\xe9"}')
    assert_one_line_error(dlbench("report", bundle, "-o", tmp_path / "r.html"),
                          f"{bundle}: images.json: not valid JSON", "byte 0xe9 in position 10")


# --------------------------------------------------------------- terminal control characters

def test_control_characters_from_a_suite_are_shown_escaped(tmp_path):
    suite = write_suite(tmp_path, 'name: t\ndescription: "\\e[31mred\\a\\r\\x9b2J\\u202eevil"\n'
                                  "runs: [{framework: pytorch, api: eager}]\n")
    proc = dlbench("plan", suite)
    assert proc.returncode == 0, proc.stderr
    no_raw_controls(proc)
    assert proc.stdout.splitlines()[0] == "suite t: 1 run(s) - \\x1b[31mred\\x07\\x0d\\x9b2J\\u202eevil"

    suite = write_suite(tmp_path, 'name: t\nruns: [{framework: "py\\e]0;owned\\atorch", api: eager}]\n')
    proc = dlbench("plan", suite)
    assert_one_line_error(proc, "unknown framework 'py\\x1b]0;owned\\x07torch'")
    no_raw_controls(proc)


def test_control_characters_from_a_bundle_are_shown_escaped(tmp_path):
    bundle = bundle_copy(tmp_path)
    run = bundle / "runs" / "01-pytorch-eager"
    run.rename(run.with_name("01-pytorch-eager\x1b[2J\x07"))
    proc = dlbench("verify", bundle)
    assert proc.returncode == 1
    no_raw_controls(proc)
    assert "runs/01-pytorch-eager\\x1b[2J\\x07/metrics.json: added" in proc.stdout


def test_control_characters_in_arguments_are_shown_escaped(tmp_path):
    proc = dlbench("plan", tmp_path / "no\x1b[31msuch.yaml")
    assert_one_line_error(proc, "no\\x1b[31msuch.yaml: cannot read suite file")
    no_raw_controls(proc)
    proc = dlbench("pla\x1bn")               # argparse's own message repeats it
    assert proc.returncode == 2 and "pla\\x1bn" in proc.stderr
    no_raw_controls(proc)
