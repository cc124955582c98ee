"""The hash-locked requirement files (docker/<framework>/requirements-<flavour>.txt) and
where their wheels may come from: the lock's pins and hashes, the build tools a source
build needs, the wheels of a wheelhouse the lock accepts, and the host pip's own
find-links and CA settings.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file


@dataclass(frozen=True)
class LockedRequirement:
    name: str          # normalised (PEP 503)
    version: str
    hashes: frozenset[str]


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> list[LockedRequirement]:
    """The `name==version --hash=sha256:...` entries of a pip-compile style lock."""
    text = path.read_text(encoding="utf-8")
    # join continuation lines, drop comments
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not stripped:
            if current:
                logical.append(current)
                current = ""
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
        else:
            logical.append(current + stripped)
            current = ""
    if current:
        logical.append(current)
    reqs = []
    for entry in logical:
        if entry.startswith("-"):
            continue  # options such as --index-url (locks here carry none)
        parts = entry.split()
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", parts[0])
        if not m:
            raise DlbenchError(f"{path}: {parts[0]!r} is not pinned with == "
                               "(regenerate with `python docker/lock.py`)")
        hashes = frozenset(p.split("=", 1)[1].split(":", 1)[1] for p in parts[1:]
                           if p.startswith("--hash=sha256:"))
        reqs.append(LockedRequirement(normalize_name(m.group(1)), m.group(3), hashes))
    return reqs


WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
BUILD_TOOLS = ("setuptools", "wheel")


def build_tools_requirements(lock: Path) -> str:
    """The lock's setuptools/wheel pins (with hashes) as a requirements text: what the
    images.yaml source_builds are built with, installed before them."""
    found = [r for r in parse_lock(lock) if r.name in BUILD_TOOLS]
    if not any(r.name == "setuptools" for r in found):
        raise DlbenchError(f"{lock}: source_builds need setuptools pinned in the lock")
    return "".join(f"{r.name}=={r.version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(r.hashes))
                   + "\n" for r in found)


def select_wheels(lock: Path, wheelhouse: Path) -> list[Path]:
    """Wheels of `wheelhouse` that the lock names, with a sha256 the lock accepts."""
    wanted = {(r.name, r.version): r.hashes for r in parse_lock(lock)}
    chosen = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        m = WHEEL_RE.match(wheel.name)
        if not m:
            continue
        key = (normalize_name(m.group("name")), m.group("version").lower())
        hashes = wanted.get(key)
        if hashes and sha256_file(wheel) in hashes:
            chosen.append(wheel)
    return chosen


def wheel_name(wheel: Path) -> str | None:
    """The normalised project name of a wheel file, or None if the name is not a wheel's."""
    m = WHEEL_RE.match(wheel.name)
    return normalize_name(m.group("name")) if m else None


def host_pip_settings(environ: Mapping[str, str] | None = None) -> tuple[Path | None, Path | None]:
    """(first local find-links directory, cert file) of the host's pip, if any."""
    env = os.environ if environ is None else environ
    find_links, cert = env.get("PIP_FIND_LINKS", ""), env.get("PIP_CERT", "")
    if not find_links or not cert:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=dict(env),
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        config: dict[str, str] = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                config.setdefault(key.split(".", 1)[-1], value.strip().strip("'\""))
        find_links = find_links or config.get("find-links", "")
        cert = cert or config.get("cert", "")
    wheelhouse = None
    for entry in find_links.split():
        path = Path(entry[len("file://"):] if entry.startswith("file://") else entry)
        if "://" not in entry.replace("file://", "", 1) and path.is_dir():
            wheelhouse = path
            break
    cert_path = Path(cert) if cert and Path(cert).is_file() else None
    return wheelhouse, cert_path
