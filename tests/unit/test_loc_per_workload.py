"""'Ease of coding' per workload (workloads/loc.py): the lines on one model kind's path, by one
rule for every framework file, read from the source."""
import textwrap

import pytest

from contract.models import MODELS, RecurrentSpec
from contract.registry import IMPLEMENTATIONS
from workloads.loc import logical_lines, logical_lines_of_implementation, logical_lines_of_workload

HEADER = '''
from contract.models import ConvNetSpec, RecurrentSpec
from .harness import Implementation as Base
'''

MODULE_FUNCTIONS = HEADER + '''
def conv(m):
    return [m, 1]

def lstm(m):
    cells = [m]
    return cells

class Implementation(Base):
    def build(self, m):
        self.model = lstm(m) if isinstance(m, RecurrentSpec) else conv(m)
        return 1

    def train_epoch(self, x, y, batch_size):
        return 0.0, 0.0
'''

METHODS = HEADER + '''
class Implementation(Base):
    def build(self, m):
        self.model = self._lstm(m) if isinstance(m, RecurrentSpec) else self._conv(m)
        return 1

    def _conv(self, m):
        return [m, 1]

    def _lstm(self, m):
        cells = [m]
        return cells

    def train_epoch(self, x, y, batch_size):
        return 0.0, 0.0
'''


def write(tmp_path, name, source):
    (tmp_path / "harness.py").write_text("class Implementation:\n    def build(self, m): ...\n"
                                         "    def train_epoch(self, x, y, b): ...\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_functions_and_methods_count_alike(tmp_path):
    a = write(tmp_path, "fw_a.py", MODULE_FUNCTIONS)
    b = write(tmp_path, "fw_b.py", METHODS)
    for kind in ("conv", "recurrent"):
        assert logical_lines_of_workload(a, kind) == logical_lines_of_workload(b, kind)
    # imports (2) + class (1) + build (3) + train_epoch (2) + the builder on the path
    assert logical_lines_of_workload(a, "conv") == 8 + 2       # def conv + return
    assert logical_lines_of_workload(a, "recurrent") == 8 + 3  # def lstm + 2 lines
    assert logical_lines(open(a).read()) == 8 + 2 + 3


def test_more_code_for_another_model_kind_leaves_a_workloads_count_alone(tmp_path):
    """The same code path, the same count: the CNN's count ignores LSTM-only code however it
    is written (a branch, an early return, a helper only that branch calls)."""
    base = write(tmp_path, "fw_base.py", METHODS)
    grown = write(tmp_path, "fw_grown.py", METHODS + '''
    def configure(self):
        if not isinstance(self.model_spec, RecurrentSpec):
            return {}
        kernel = lstm_kernel()
        return {"lstm_kernel": kernel}

def lstm_kernel():
    name = "fused"
    return name
''')
    assert logical_lines_of_workload(grown, "conv") == logical_lines_of_workload(base, "conv") + 3
    assert logical_lines_of_workload(grown, "recurrent") == logical_lines_of_workload(base, "recurrent") + 7


def test_a_decided_test_assigned_to_a_name_decides_branches_too(tmp_path):
    path = write(tmp_path, "fw_flag.py", HEADER + '''
class Implementation(Base):
    def build(self, m):
        recurrent = isinstance(m, RecurrentSpec)
        if recurrent:
            a = 1
            b = 2
        else:
            a = 3
        return a
''')
    # imports (2) + class (1) + def, assignment, if (3) + the branch taken + return (1)
    assert logical_lines_of_workload(path, "conv") == 2 + 1 + 3 + 1 + 1
    assert logical_lines_of_workload(path, "recurrent") == 2 + 1 + 3 + 2 + 1


@pytest.mark.parametrize("pair", sorted(IMPLEMENTATIONS))
def test_every_framework_file_has_a_count_per_model_kind(pair):
    path = IMPLEMENTATIONS[pair].replace(".", "/") + ".py"
    whole = logical_lines_of_implementation(path)
    conv, recurrent = logical_lines_of_workload(path, "conv"), logical_lines_of_workload(path, "recurrent")
    assert 0 < conv < whole and 0 < recurrent < whole  # every file builds both kinds
    # the three CNN workloads are one code path: one count
    kinds = {name: isinstance(m, RecurrentSpec) for name, m in MODELS.items()}
    assert sorted(kinds.values()).count(False) == 3


def test_a_sibling_module_counts_with_what_is_used_of_it():
    graph = "workloads/tensorflow_graph.py"
    alone = logical_lines(open(graph).read())
    assert logical_lines_of_workload(graph, "conv") > alone + 50  # tensorflow_eager's loop, its base
