"""Logical lines of code: the papers' "ease of coding" metric, counted by the tool.

A logical line is a Python statement line: blank lines, comments, docstrings and
continuation lines of one statement do not count.
"""
from __future__ import annotations

import ast
import functools
import io
import os
import tokenize

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
         tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def _statement_lines(source: str):
    """The first line of each logical line that counts (a statement, not a docstring)."""
    in_statement, statement_is_docstring, start = False, True, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NEWLINE:
            if in_statement and not statement_is_docstring:
                yield start
            in_statement, statement_is_docstring = False, True
        elif tok.type not in _SKIP:
            if not in_statement:
                start = tok.start[0]
            in_statement = True
            if tok.type != tokenize.STRING:
                statement_is_docstring = False


def logical_lines(source: str) -> int:
    return sum(1 for _ in _statement_lines(source))


def logical_lines_of_file(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return logical_lines(fh.read())


# The harness's own modules: shared by every framework, so not part of any one's count.
SHARED_MODULES = {"harness", "models", "data", "registry", "loc", "__main__", "__init__"}


def logical_lines_of_implementation(path: str) -> int:
    """The framework file plus any framework-specific workloads module it imports
    (e.g. a Keras model shared by the Keras files), each counted once."""
    directory, seen, todo, total = os.path.dirname(path), set(), [path], 0
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        with open(current, encoding="utf-8") as fh:
            source = fh.read()
        total += logical_lines(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                for name in names:
                    candidate = os.path.join(directory, f"{name.split('.')[0]}.py")
                    if name.split(".")[0] not in SHARED_MODULES and os.path.isfile(candidate):
                        todo.append(candidate)
    return total


# -- per workload: the lines on one workload's path ----------------------------------------
#
# The papers count the code a user writes for one model in one API. A framework file builds
# every model kind (contract.models: ConvNetSpec for the CNNs, RecurrentSpec for the LSTM), so
# per workload the count is the same file with what that model kind never reaches taken out,
# by one rule for every framework, read from the source (nothing runs):
#   1. an `isinstance(x, RecurrentSpec)` / `isinstance(x, ConvNetSpec)` test is known for a
#      model kind (through `not`, `and`, `or`, and a name assigned such a test); the branch of
#      an `if` (or of a conditional expression) it rules out is left out, and so is the rest
#      of a block after a taken branch that returns or raises;
#   2. a module-level function or class counts only when the code still counted refers to it
#      (by name), starting from the module's other statements and the `Implementation` class
#      the harness instantiates; in a sibling module imported from (keras_model.py), from the
#      names imported (`from . import m`: the attributes of m used). In the classes derived
#      from the harness's Implementation, a method counts when it is one of the harness's
#      (build, train_epoch, ...) or the counted code uses its name (`self._build_lstm`, or a
#      string naming it or starting it: `getattr(self, f"_setup_{BACKEND}")`);
#   3. what remains is counted in logical lines, as `logical_lines` counts a whole file.
# The CNN workloads share one path, so they have one count; the LSTM has its own.

MODEL_KINDS = {"conv": "ConvNetSpec", "recurrent": "RecurrentSpec"}


@functools.cache
def harness_methods() -> frozenset[str]:
    """The methods of harness.Implementation, read from its source (no import: the harness
    imports this module)."""
    with open(os.path.join(os.path.dirname(__file__), "harness.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Implementation")
    return frozenset(n.name for n in cls.body if isinstance(n, ast.FunctionDef))


def logical_lines_of_workload(path: str, kind: str) -> int:
    """Logical lines of the framework file (and its sibling modules) on the path of a model
    kind ("conv" or "recurrent"), by the rule above."""
    directory = os.path.dirname(path)
    wanted: dict[str, set[str] | None] = {path: None}  # None: from the Implementation class
    trees: dict[str, tuple[str, ast.Module]] = {}
    changed = True
    while changed:  # a sibling's names can grow as more of the importer is reached
        changed = False
        for current in list(wanted):
            if current not in trees:
                with open(current, encoding="utf-8") as fh:
                    source = fh.read()
                trees[current] = (source, ast.parse(source))
            _, used, imports = _path_of(trees[current][1], kind, wanted[current])
            for module, names in imports.items():
                candidate = os.path.join(directory, f"{module}.py")
                if module in SHARED_MODULES or not os.path.isfile(candidate):
                    continue
                # its names used here, and every attribute name used here: a method a
                # subclass here calls on `self` may be defined there
                need, old = (names | used) & used, wanted.get(candidate)
                if candidate not in wanted or not need <= (old or set()):
                    wanted[candidate] = (old or set()) | need
                    changed = True
    return sum(_count_lines(source, _path_of(tree, kind, wanted[p])[0]) for p, (source, tree) in trees.items())


def _known(test, kind: str, decided: dict | None = None) -> bool | None:
    """True/False when `test` is decided by the model kind alone, else None. `decided`: names
    assigned a decided test (`recurrent = isinstance(m, RecurrentSpec)`)."""
    if isinstance(test, ast.Name) and decided is not None:
        return decided.get(test.id)
    if (isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "isinstance"
            and len(test.args) == 2 and isinstance(test.args[1], ast.Name)
            and test.args[1].id in MODEL_KINDS.values()):
        return test.args[1].id == MODEL_KINDS[kind]
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _known(test.operand, kind, decided)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [_known(v, kind, decided) for v in test.values]
        if isinstance(test.op, ast.And):
            return False if False in values else True if all(v is True for v in values) else None
        return True if True in values else False if all(v is False for v in values) else None
    return None


def _live_statements(body: list, kind: str, decided: dict) -> list:
    """The statements of a block the model kind reaches, dead branches replaced by the taken
    branch's statements (rule 1)."""
    live: list = []
    for stmt in body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            value = _known(stmt.value, kind, decided)
            if value is not None:
                decided[stmt.targets[0].id] = value
        if isinstance(stmt, ast.If):
            taken = _known(stmt.test, kind, decided)
            if taken is not None:
                branch = stmt.body if taken else stmt.orelse
                live.append(("if-line", stmt))
                inner = _live_statements(branch, kind, decided)
                live.extend(inner)
                if branch and isinstance(branch[-1], (ast.Return, ast.Raise)):
                    return live  # the rest of this block is never reached
                continue
        live.append(stmt)
    return live


class _Pruner:
    """Collects the lines and the names of the code a model kind reaches."""

    def __init__(self, kind: str, interface: set[str], methods: frozenset[str]):
        self.kind = kind
        self.interface = interface      # local names of harness.Implementation and its subclasses
        self.methods = methods          # the harness's method names: always on the path
        self.pending: list = []         # methods of those classes not (yet) used
        self.prefixes: set[str] = set() # f"_setup_{x}": names made at run time start so
        self.lines: set[int] = set()
        self.names: set[str] = set()
        self.attributes: dict[str, set[str]] = {}  # name -> attributes used on it (modules)
        self.decided: dict[str, bool] = {}

    def block(self, body: list) -> None:
        for item in _live_statements(body, self.kind, self.decided):
            if isinstance(item, tuple):  # the `if` line of a decided test: evaluated, counted
                self.lines.add(item[1].lineno)
                continue
            self.statement(item)
            if isinstance(item, ast.If):
                self.block(item.body)
                self.block(item.orelse)
            elif isinstance(item, (ast.For, ast.AsyncFor, ast.While)):
                self.block(item.body)
                self.block(item.orelse)
            elif isinstance(item, (ast.With, ast.AsyncWith)):
                self.block(item.body)
            elif isinstance(item, ast.Try):
                self.block(item.body)
                for handler in item.handlers:
                    self.lines.add(handler.lineno)
                    self.block(handler.body)
                self.block(item.orelse)
                self.block(item.finalbody)
            elif isinstance(item, ast.ClassDef) and self.derives_from_harness(item):
                self.interface.add(item.name)
                for member in item.body:
                    if isinstance(member, ast.FunctionDef) and not self.on_path(member.name):
                        self.pending.append(member)
                    else:
                        self.block([member])
            elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.block(item.body)

    def derives_from_harness(self, cls) -> bool:
        return any((isinstance(b, ast.Name) and b.id in self.interface)
                   or (isinstance(b, ast.Attribute) and b.attr == "Implementation") for b in cls.bases)

    def on_path(self, method: str) -> bool:
        return (method in self.methods or method in self.names or method.startswith("__")
                or any(method.startswith(prefix) for prefix in self.prefixes))

    def settle(self) -> bool:
        """Visit the pending methods the counted code now uses; True when any was."""
        ready = [m for m in self.pending if self.on_path(m.name)]
        self.pending = [m for m in self.pending if not self.on_path(m.name)]
        for method in ready:
            self.block([method])
        return bool(ready)

    def statement(self, stmt) -> None:
        """The statement's own line(s) and every name its own expressions use (not those of
        nested blocks, which block() visits), skipping the dead side of `a if test else b`."""
        self.lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
                          if not hasattr(stmt, "body") else {stmt.lineno})
        own = [value for name, value in ast.iter_fields(stmt)
               if name not in ("body", "orelse", "finalbody", "handlers")]
        if hasattr(stmt, "body"):  # a compound statement: its header (test, iter, decorators, ...)
            self.lines.update(range(stmt.lineno, _header_end(stmt) + 1))
        for value in own:
            for node in value if isinstance(value, list) else [value]:
                if isinstance(node, ast.AST):
                    self.expression(node)

    def expression(self, node) -> None:
        if isinstance(node, ast.IfExp):
            taken = _known(node.test, self.kind, self.decided)
            if taken is not None:
                self.expression(node.body if taken else node.orelse)
                return
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            self.names.add(node.value)  # getattr(self, "name")
        if (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
                and str(node.values[0].value).isidentifier()):
            self.prefixes.add(str(node.values[0].value))
            for part in node.values[1:]:
                self.expression(part)
            return
        if isinstance(node, ast.Attribute):
            self.names.add(node.attr)  # self._helper, module.function: a use of that name
            if isinstance(node.value, ast.Name):
                self.attributes.setdefault(node.value.id, set()).add(node.attr)
        for child in ast.iter_child_nodes(node):
            self.expression(child)


def _header_end(stmt) -> int:
    """Last line of a compound statement's header (before its body)."""
    first_body = stmt.body[0] if getattr(stmt, "body", None) else None
    return max(stmt.lineno, (first_body.lineno - 1) if first_body is not None else stmt.lineno)


def _path_of(tree, kind: str, wanted: set[str] | None):
    """(line numbers counted, names used, {sibling module: names imported}) of one module."""
    definitions = {node.name: node for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    imports: dict[str, set[str]] = {}
    modules: set[str] = set()  # `from . import m`: m's names are the attributes used on m
    interface = {"Implementation"}
    for node in tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.level == 1):
            continue
        # harness.Implementation (as Base) and the sibling classes derived from it
        interface.update(a.asname or a.name for a in node.names if a.name[:1].isupper())
        if node.module:
            imports.setdefault(node.module.split(".")[0], set()).update(a.asname or a.name for a in node.names)
        else:
            modules.update(a.name for a in node.names)
    pruner = _Pruner(kind, interface, harness_methods())
    pruner.names.update(wanted or ())
    pruner.block([node for node in tree.body if node not in definitions.values()])
    reached: set[str] = set()
    frontier = set(wanted) if wanted is not None else {"Implementation"}
    while True:
        frontier |= {n for n in pruner.names if n in definitions}
        new = frontier - reached
        if not new:
            break
        for name in sorted(new):
            if name in definitions:
                pruner.block([definitions[name]])
        reached |= new
        while pruner.settle():
            pass
    for module in modules:
        imports[module] = pruner.attributes.get(module, set())
    return pruner.lines, pruner.names | {a for m in modules for a in imports[m]}, imports


def _count_lines(source: str, kept: set[int]) -> int:
    """logical_lines over the statements that start on a kept line."""
    return sum(1 for line in _statement_lines(source) if line in kept)
