#!/usr/bin/env python3
"""Regenerate the hash-locked requirements of every image in docker/images.yaml.

    python docker/lock.py                           # all locks (keeps current pins where allowed)
    python docker/lock.py pytorch/cpu tensorflow    # some of them
    python docker/lock.py --upgrade                 # move unpinned dependencies forward

Each docker/<framework>/requirements-<flavour>.in is compiled with uv for the image's
Python on x86_64 manylinux_2_28 (Debian 12 glibc 2.36), with a sha256 for every file.

A pin with a local version label (torch==2.13.0+cpu) is on no default index: give a
directory holding the wheel (--wheelhouse DIR, or env DLBENCH_WHEELHOUSE; else the host
pip's find-links directory is used if it has one), or the index that serves it
(--extra-index-url https://download.pytorch.org/whl/cpu, or env DLBENCH_PIP_EXTRA_INDEX_URL).
Other locks resolve from the default index only.
uv ignores pip's configuration; its own environment (UV_DEFAULT_INDEX, SSL_CERT_FILE...)
applies.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from orchestrator.errors import DlbenchError  # noqa: E402
from orchestrator.images import host_pip_settings, load_images  # noqa: E402

PLATFORM = "x86_64-manylinux_2_28"
COMPILE_COMMAND = "python docker/lock.py"
LOCAL_VERSION_PIN = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._\[\],-]*==\S*\+\S*", re.MULTILINE)


def uv_command() -> list[str]:
    exe = shutil.which("uv")
    if exe:
        return [exe]
    try:
        import uv  # noqa: F401 - the PyPI package ships the binary
        return [sys.executable, "-m", "uv"]
    except ImportError:
        raise SystemExit("lock.py: uv not found; pip install uv") from None


def targets(selected: list[str]):
    images = load_images(check_locks=False)
    wanted = []
    for sel in selected or [f"{fw}/{fl}" for fw, spec in images.items() for fl in spec.flavours]:
        framework, _, flavour = sel.partition("/")
        if framework not in images:
            raise SystemExit(f"lock.py: {framework!r} is not in docker/images.yaml "
                             f"(known: {', '.join(images)})")
        spec = images[framework]
        for fl in ([flavour] if flavour else list(spec.flavours)):
            if fl not in spec.flavours:
                raise SystemExit(f"lock.py: {framework} has no flavour {fl!r}")
            wanted.append((spec, spec.flavours[fl]))
    return wanted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python docker/lock.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="framework or framework/flavour (default: all)")
    parser.add_argument("--wheelhouse", default=os.environ.get("DLBENCH_WHEELHOUSE"),
                        help="directory of wheels for local-version pins (env DLBENCH_WHEELHOUSE)")
    parser.add_argument("--extra-index-url", default=os.environ.get("DLBENCH_PIP_EXTRA_INDEX_URL"),
                        help="index for local-version pins (env DLBENCH_PIP_EXTRA_INDEX_URL)")
    parser.add_argument("--upgrade", action="store_true", help="allow newer unpinned dependencies")
    args = parser.parse_args(argv)

    uv = uv_command()
    try:
        wanted = targets(args.targets)
    except DlbenchError as exc:
        raise SystemExit(f"lock.py: {exc}") from None
    for spec, flavour in wanted:
        lock = flavour.lock
        source = lock.with_suffix(".in")
        if not source.is_file():
            raise SystemExit(f"lock.py: {source} missing (the input of {lock.name})")
        cmd = uv + ["pip", "compile", "--quiet", "--no-config", "--generate-hashes",
                    "--python-version", spec.python, "--python-platform", PLATFORM,
                    "--custom-compile-command", COMPILE_COMMAND,
                    "--output-file", lock.name, source.name]
        if spec.source_builds:  # uv builds those sdists to read their metadata: with the .in's
            cmd += ["--build-constraints", source.name]  # own setuptools/wheel, as the image does
        if args.upgrade:
            cmd.append("--upgrade")
        if LOCAL_VERSION_PIN.search(source.read_text(encoding="utf-8")):
            if not (args.wheelhouse or args.extra_index_url):
                args.wheelhouse = host_pip_settings()[0]  # the host pip's find-links, if any
                if args.wheelhouse:
                    print(f"  wheelhouse {args.wheelhouse} (the host pip's find-links)")
            if not (args.wheelhouse or args.extra_index_url):
                raise SystemExit(
                    f"lock.py: {source} pins a local-version wheel (+...): pass --wheelhouse DIR "
                    "or --extra-index-url URL (PyTorch's CPU wheels: "
                    "https://download.pytorch.org/whl/cpu)")
            if args.wheelhouse:
                cmd += ["--find-links", str(Path(args.wheelhouse).resolve())]
            if args.extra_index_url:
                cmd += ["--extra-index-url", args.extra_index_url]
        print(f"locking {lock.relative_to(REPO_ROOT)}", flush=True)
        result = subprocess.run(cmd, cwd=lock.parent)
        if result.returncode != 0:
            print(f"lock.py: uv failed for {source.relative_to(REPO_ROOT)}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
