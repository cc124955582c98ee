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
