"""How a long image operation (a build, a base image) reports: an optional callback that
takes one line at a time, and the one-line form of a Docker engine's error text."""
from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None] | None


def say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else ""
