"""Reading a suite file: UTF-8 YAML of a size, depth and shape a person writes, nothing more.

A suite file may come from anyone (a colleague, a bundle, a download), so reading it must
never hang, run out of memory or guess: no aliases or anchors (nested aliases expand
exponentially: a few hundred bytes can stand for billions of nodes), no mapping key given
twice (YAML keeps the last one silently), no value a JSON document cannot hold (a date, NaN,
a key that is not a string), and a one-line DlbenchError naming the file and where.
Never imports anything of the orchestrator above errors.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import DlbenchError

MAX_BYTES = 1 << 20      # the shipped suites are a few kB; a suite of more is not hand-written
MAX_DEPTH = 32           # nesting levels (the suite schema needs 5)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML a suite file may not use (alias, anchor, repeated key, deep nesting)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(None, None, problem, mark)


class _SuiteLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases or anchors, with a nesting limit, and with an error
    for a mapping key given twice."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"alias *{event.anchor}: a suite may not use YAML aliases "
                           "(write the value out)", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused(f"anchor &{anchor}: a suite may not use YAML anchors or "
                           "aliases (write each value out)", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: SafeLoader's own error says so
                if first is not None:
                    raise _Refused(f"duplicate key {key!r} (first at line {first.line + 1}): "
                                   "keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_suite_file(path: Path) -> tuple[str, Any]:
    """(the file's text, its YAML document), or a one-line DlbenchError naming the file."""
    try:  # non-blocking: a FIFO with no writer must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DlbenchError(f"{path}: cannot read suite file ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # a directory, a FIFO, a device (/dev/zero): no suite
        os.close(fd)
        what = "is a directory" if stat.S_ISDIR(mode) else "is not a regular file (a FIFO or a device)"
        raise DlbenchError(f"{path}: {what}; give the suite file's path")
    with os.fdopen(fd, "rb") as fh:
        try:
            raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise DlbenchError(f"{path}: cannot read suite file ({exc.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise DlbenchError(f"{path}: more than {MAX_BYTES // 1024} KiB: not a suite file "
                           "(suites are a few kB of YAML)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DlbenchError(f"{path}: not UTF-8 text (byte {exc.start}: 0x{raw[exc.start]:02x}); "
                           "save the suite as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_SuiteLoader)  # noqa: S506 - a SafeLoader, stricter still
    except _Refused as exc:
        raise DlbenchError(f"{path}: {_where(exc.problem_mark)}{exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DlbenchError(f"{path}: malformed YAML, {_where(mark)}{problem}") from None
    except RecursionError:  # not reached with MAX_DEPTH; kept so no input can crash the reader
        raise DlbenchError(f"{path}: nested too deeply to read") from None
    return text, data


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def field_path(parts) -> str:
    """['runs', 0, 'batch_size'] -> 'runs[0].batch_size'; a key that is not a plain name is
    quoted (runs[0].options['a b']), so a newline in it cannot split the one-line message."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(str(part)):
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def json_value_problem(value, parts=()) -> str | None:
    """'field: what is wrong' for the first value a JSON document cannot hold (NaN or an
    infinity, a date, bytes, a set, a key that is not a string), else None. Suites become
    spec.json and plan.json: such a value would pass the schema and fail or vanish later."""
    if isinstance(value, float) and not math.isfinite(value):
        return (f"{field_path(parts)}: {value} is not a finite number (YAML's .nan/.inf); "
                "give a number")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{field_path([*parts, str(key)])}: the key {key!r} is not a name (YAML "
                        "reads yes/no/on/off, numbers and null as values): quote it")
            problem = json_value_problem(item, (*parts, key))
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_value_problem(item, (*parts, index))
            if problem:
                return problem
    elif isinstance(value, (dt.date, bytes, set)):
        kind = {dt.datetime: "a timestamp", dt.date: "a date", bytes: "binary data",
                set: "a set"}.get(type(value), "this")
        return f"{field_path(parts)}: {kind} is not a value a suite takes (quote it if it is text)"
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        return f"{field_path(parts)}: a {type(value).__name__} is not a value a suite takes"
    return None
