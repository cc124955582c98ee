"""Suite files: expansion into runs, and one-line errors for every kind of bad input."""
import ast
import subprocess
import sys
import textwrap

import jsonschema
import pytest

from contract.registry import IMPLEMENTATIONS, OPTIONS
from orchestrator.errors import DlbenchError
from orchestrator.paths import REPO_ROOT
from orchestrator.plan import rules
from orchestrator.plan.rules import Target
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


# ------------------------------------------------------------------ framework options are data

def _options_read(tree) -> set[str]:
    """Option names a framework file reads: X["options"].get("k"), X["options"]["k"], "k" in X["options"]."""
    def is_options(node) -> bool:
        return isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
            node.slice.value == "options"

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" and is_options(node.func.value):
            assert isinstance(node.args[0], ast.Constant), ast.unparse(node)  # a name, not computed
            found.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and is_options(node.value):
            assert isinstance(node.slice, ast.Constant), ast.unparse(node)
            found.add(node.slice.value)
        elif isinstance(node, ast.Compare) and len(node.comparators) == 1 and \
                isinstance(node.ops[0], ast.In) and is_options(node.comparators[0]):
            found.add(node.left.value)
    return found


def _workload_modules(module: str) -> set[str]:
    """The module and every workloads module it imports (relatively), transitively."""
    seen, todo = set(), [module.rsplit(".", 1)[-1]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((REPO_ROOT / "workloads" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module] if node.module else [a.name for a in node.names]
    return seen


def test_every_option_a_framework_file_reads_is_declared_and_every_declared_one_is_read():
    """contract.registry.OPTIONS is what the plan accepts: read from the framework files'
    source (the file and the workloads modules it imports), both ways."""
    assert set(OPTIONS) == set(IMPLEMENTATIONS)
    for pair, module in IMPLEMENTATIONS.items():
        read = set()
        for name in _workload_modules(module):
            read |= _options_read(ast.parse((REPO_ROOT / "workloads" / f"{name}.py").read_text()))
        assert read == set(OPTIONS[pair]), (pair, module, read)
        for option, schema in OPTIONS[pair].items():
            jsonschema.Draft202012Validator.check_schema(schema)
            assert schema.get("description"), (pair, option)


def test_known_options_pass_and_their_values_are_checked(tmp_path):
    suite = load_suite(write(tmp_path, """
        name: t
        runs:
          - {framework: pytorch, api: eager, options: {compile: true}}
          - {framework: tensorflow, api: keras, options: {jit_compile: auto}}
          - {framework: mxnet, api: gluon, options: {hybridize: false}}
    """))
    assert [r.spec["options"] for r in suite.runs] == [{"compile": True}, {"jit_compile": "auto"},
                                                       {"hybridize": False}]
    with pytest.raises(DlbenchError, match=r"runs\[0\]\.options\.jit_compile: 'yes' is not one of"):
        load_suite(write(tmp_path, "name: t\nruns: [{framework: tensorflow, api: keras, "
                                   "options: {jit_compile: 'yes'}}]\n"))


# ------------------------------------------------------------------ resources against the machine

@pytest.mark.parametrize("resources, here, elsewhere", [
    ("{cpus: 4}", "runs[0].resources.cpus: 4 CPUs is more than the 2 this host can give a run", True),
    ("{cpuset: '0,3'}", "runs[0].resources.cpuset: CPU 3 is not one this host can give a run (it has 0-1)", True),
    ("{cpuset: '0-70000'}", "runs[0].resources.cpuset: CPU 70000 is beyond any machine's CPUs", False),
    ("{cpus: 2, cpuset: '1'}", "runs[0].resources.cpus: 2 CPUs on a cpuset of 1 (1) limits nothing", False),
])
def test_resources_are_checked_against_the_target(tmp_path, resources, here, elsewhere):
    """A two-CPU target: what it lacks is an error when the plan runs there, a warning when
    not; what no machine takes is an error either way."""
    path = write(tmp_path, f"name: t\nruns: [{{framework: pytorch, api: eager, resources: {resources}}}]\n")
    two = frozenset({0, 1})
    with pytest.raises(DlbenchError) as err:
        load_suite(path, target=Target(two))
    assert str(err.value).startswith(f"{path}: {here}"), str(err.value)
    if elsewhere:
        suite = load_suite(path, target=Target(two, runs_here=False))
        assert suite.warnings == [f"{path}: {here} (fine if the suite runs on a machine that has them)"]
    else:
        with pytest.raises(DlbenchError):
            load_suite(path, target=Target(two, runs_here=False))


@pytest.mark.parametrize("text, ids", [("0", [0]), ("0-3,6", [0, 1, 2, 3, 6]), ("3,1-2,1", [1, 2, 3])])
def test_cpuset_parsing(text, ids):
    assert rules.parse_cpuset(text) == ids
    assert rules.parse_cpuset(rules.format_cpuset(ids)) == ids


@pytest.mark.parametrize("text, size", [("6m", 6 * 2**20), ("8g", 8 * 2**30), ("1.5G", 3 * 2**29),
                                        ("512", 512), ("2k", 2048)])
def test_memory_sizes_are_read_as_docker_reads_them(text, size):
    from docker.utils import parse_bytes

    assert rules.memory_bytes(text) == size == parse_bytes(text)


# ------------------------------------------------------------------ gpus: the run's own GPUs

UUID = "GPU-8f6f3d2c-1a2b-4c3d-9e8f-0123456789ab"


def test_gpus_from_defaults_or_the_run_reach_the_plan(tmp_path):
    """Indices or UUIDs, in defaults or per run; carried in plan.json (and back, as resume
    reads it); runs that differ only in their GPUs are different runs."""
    from orchestrator.plan.suite import PlannedRun

    suite = load_suite(write(tmp_path, f"""
        name: t
        defaults: {{device: gpu, synthetic: true, gpus: [1, {UUID}]}}
        runs:
          - {{framework: pytorch, api: eager}}
          - {{framework: pytorch, api: eager, gpus: [0]}}
          - {{framework: pytorch, api: eager, gpus: null}}
    """))
    assert [run.gpus for run in suite.runs] == [[1, UUID], [0], None]
    plan = {"suite": "t", "backend": "docker", "runs": [run.to_dict() for run in suite.runs]}
    assert schema_error("plan", plan) is None
    assert [PlannedRun(**run).gpus for run in plan["runs"]] == [[1, UUID], [0], None]
    assert f"gpus=1,{UUID}" in format_plan(suite) and "gpus=0" in format_plan(suite)
    legacy = {k: v for k, v in plan["runs"][0].items() if k != "gpus"}  # a plan made before gpus
    assert PlannedRun(**legacy).gpus is None


@pytest.mark.parametrize("gpus, device, message", [
    ("[0, 0]", "gpu", "runs[0].gpus[1]: 0 is given twice (also gpus[0]); list each GPU once"),
    (f"[{UUID}, '{UUID.upper()}']", "gpu", f"runs[0].gpus[1]: '{UUID.upper()}' is given twice (also gpus[0])"),
    ("[-1]", "gpu", "runs[0].gpus[0]: -1 is not a GPU index (0 ... 1023, as nvidia-smi numbers them)"),
    ("[1, gpu0]", "gpu", "runs[0].gpus[1]: 'gpu0' is neither a GPU index nor a GPU UUID (GPU-xxxxxxxx-"),
    ("[1.5]", "gpu", "runs[0].gpus[0]: 1.5 is not of type 'integer', 'string'"),
    ("[true]", "gpu", "runs[0].gpus[0]: True is not of type 'integer', 'string'"),
    ("[]", "gpu", "runs[0].gpus: [] should be non-empty"),
    ("0", "gpu", "runs[0].gpus: 0 is not of type 'array', 'null'"),
    ("[0]", "cpu", "runs[0].gpus: GPUs given for a device: cpu run; give gpus only to device: gpu runs"),
])
def test_bad_gpus_are_one_line_naming_the_entry(tmp_path, gpus, device, message):
    path = write(tmp_path, f"name: t\nruns: [{{framework: pytorch, api: eager, device: {device}, "
                           f"gpus: {gpus}}}]\n")
    with pytest.raises(DlbenchError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_gpus_in_defaults_for_a_cpu_run_names_the_defaults(tmp_path):
    path = write(tmp_path, "name: t\ndefaults: {gpus: [0]}\nruns: [{framework: pytorch, api: eager}]\n")
    with pytest.raises(DlbenchError, match=r"^.*suite\.yaml: defaults\.gpus: GPUs given for a device: cpu run"):
        load_suite(path)
