"""Logical lines of code: the papers' "ease of coding" metric, counted by the tool.

A logical line is a Python statement line: blank lines, comments, docstrings and
continuation lines of one statement do not count.
"""
from __future__ import annotations

import io
import tokenize

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
         tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def logical_lines(source: str) -> int:
    count = 0
    in_statement = False
    statement_is_docstring = True
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for tok in tokens:
        if tok.type == tokenize.NEWLINE:
            if in_statement and not statement_is_docstring:
                count += 1
            in_statement, statement_is_docstring = False, True
        elif tok.type not in _SKIP:
            in_statement = True
            if tok.type != tokenize.STRING:
                statement_is_docstring = False
    return count


def logical_lines_of_file(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return logical_lines(fh.read())


# The harness's own modules: shared by every framework, so not part of any one's count.
SHARED_MODULES = {"harness", "models", "data", "registry", "loc", "__main__", "__init__"}


def logical_lines_of_implementation(path: str) -> int:
    """The framework file plus any framework-specific workloads module it imports
    (e.g. a Keras model shared by the Keras files), each counted once."""
    import ast
    import os

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
