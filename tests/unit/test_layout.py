"""The layout's promises, checked: the import contracts in pyproject.toml hold (and would
catch a forbidden import), and the contract package loads neither side nor numpy."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from orchestrator.paths import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, *extra_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(str(p) for p in (*extra_path, cwd))}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower().replace("0 broken", "")


def copy_tree(tmp_path: Path) -> Path:
    """The three packages and the contracts, in a scratch directory a test may break."""
    root = tmp_path / "tree"
    for package in ("contract", "orchestrator", "workloads"):
        shutil.copytree(REPO_ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_a_forbidden_import_breaks_the_contracts(tmp_path):
    """Each kind of forbidden import, planted in a copy of the tree, fails lint-imports."""
    plants = {
        "contract/leak.py": "import numpy\n",                                  # contract is numpy-free
        "orchestrator/analysis/leak.py": "from workloads import harness\n",    # host imports container code
        "workloads/leak.py": "from orchestrator import paths\n",               # container imports host code
        "orchestrator/results/leak.py": "from orchestrator.report import charts\n",  # a layer imports upwards
    }
    for relative, source in plants.items():
        root = copy_tree(tmp_path / relative.replace("/", "_"))
        (root / relative).write_text(source)
        proc = lint_imports(root)
        assert proc.returncode != 0, f"{relative}: planted import not caught\n{proc.stdout[-2000:]}"
        assert "BROKEN" in proc.stdout


def test_contract_and_host_modules_load_no_numpy_and_no_container_code():
    code = textwrap.dedent("""
        import sys
        import contract.datasets, contract.events, contract.hostinfo, contract.jsonio
        import contract.models, contract.registry, contract.schemas
        assert "numpy" not in sys.modules, "contract loaded numpy"
        import orchestrator.results.directory, orchestrator.plan.suite, orchestrator.cli
        leaked = sorted(m for m in sys.modules if m == "workloads" or m.startswith("workloads."))
        assert not leaked, leaked
        assert "numpy" not in sys.modules, "the results/plan layers loaded numpy"
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_framework_file_imports_names_that_exist():
    """Framework files import only inside their images, so no unit test imports them: check
    statically that each first-party name they import exists (a moved module shows here)."""
    import ast
    import importlib

    for path in sorted((REPO_ROOT / "workloads").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level and node.module is None:  # from . import harness
                for alias in node.names:
                    assert (REPO_ROOT / "workloads" / f"{alias.name}.py").is_file(), f"{path.name}:{node.lineno}"
                continue
            if node.level:
                module_name = f"workloads.{node.module}"
                assert (REPO_ROOT / "workloads" / f"{node.module}.py").is_file(), \
                    f"{path.name}:{node.lineno}: no workloads/{node.module}.py"
                if node.module not in ("harness", "data", "loc"):  # the others need their framework
                    continue
                module = importlib.import_module(module_name)
            elif node.module and node.module.split(".")[0] in ("contract", "orchestrator", "workloads"):
                module = importlib.import_module(node.module)
            else:
                continue
            for alias in node.names:
                assert hasattr(module, alias.name), f"{path.name}:{node.lineno}: {node.module} has no {alias.name}"
