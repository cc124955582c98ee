"""The base image every framework image starts from: the digest-pinned public one, found
or pulled, or on a machine without a container registry a local Debian one (minbase +
python3) made with mmdebstrap and imported through the docker SDK.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections import deque
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.images.progress import Progress, first_line, say
from orchestrator.paths import cache_dir

DEFAULT_BASE_TAG = "local/bookworm-python:3.11"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")

MAKE_BASE_HINT = ("make one without a registry with `make base-image` (or `dlbench images base`), "
                  f"then set DLBENCH_BASE_IMAGE={DEFAULT_BASE_TAG}")


def resolve_base(client, base: str, progress: Progress = None, pull: bool = True):
    """The base image object; pulled when missing (a digest pin makes that deterministic)."""
    import docker.errors

    try:
        return client.images.get(base)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise DlbenchError(f"base image {base}: {exc.explanation or exc}") from None
    reason = "pulling is disabled"
    if pull:
        say(progress, f"base image {base} not found locally, pulling it")
        try:
            return client.images.pull(base)
        except docker.errors.APIError as exc:
            reason = f"pull failed: {first_line(exc.explanation or str(exc))}"
    raise DlbenchError(f"base image {base} is not available locally and {reason}; {MAKE_BASE_HINT}")


def default_base_tarball(suite: str = "bookworm") -> Path:
    return cache_dir() / "base" / f"{suite}-minbase-python3.tar"


def make_base_image(client, tag: str = DEFAULT_BASE_TAG, cache_tarball: Path | str | None = None,
                    suite: str = "bookworm", mirror: str | None = None,
                    progress: Progress = None, rebuild: bool = False) -> str:
    """Debian minbase + python3 (+venv, pip, CA certificates) made with mmdebstrap and
    imported with the SDK; the tarball is cached and reused. Returns the tag."""
    tarball = Path(cache_tarball) if cache_tarball else default_base_tarball(suite)
    mirror = mirror or os.environ.get("DLBENCH_DEBIAN_MIRROR") or None
    if rebuild or not tarball.is_file():
        _run_mmdebstrap(tarball, suite, mirror, progress)
    else:
        say(progress, f"reusing base tarball {tarball}")
    tar_sha = sha256_file(tarball)
    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    try:
        existing = client.images.get(tag)
        labels = (existing.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get("org.dlbench.base-tarball-sha256") == tar_sha and not rebuild:
            say(progress, f"{tag}: already imported ({existing.short_id})")
            return tag
    except Exception:  # noqa: BLE001 - not there yet
        pass
    say(progress, f"importing {tarball} as {tag}")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        f"LABEL org.dlbench.base-tarball-sha256={tar_sha}",
        f"LABEL org.dlbench.base-suite={suite}",
        f"LABEL org.dlbench.base-packages={','.join(BASE_PACKAGES)}",
    ]
    try:
        client.api.import_image(src=str(tarball), repository=repository, tag=version, changes=changes)
    except Exception as exc:  # noqa: BLE001 - docker errors and I/O errors alike
        raise DlbenchError(f"importing {tarball} as {tag} failed: {first_line(str(exc))}") from None
    return tag


def _run_mmdebstrap(tarball: Path, suite: str, mirror: str | None, progress: Progress) -> None:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise DlbenchError("mmdebstrap is not installed; it makes the base image without a "
                           "registry: apt-get install mmdebstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial")
    cmd = [exe, "--variant=minbase", "--format=tar", f"--include={','.join(BASE_PACKAGES)}",
           suite, str(partial)]
    if mirror:
        cmd.append(mirror)
    say(progress, "running " + " ".join(shlex.quote(c) for c in cmd))
    tail: deque[str] = deque(maxlen=10)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            say(progress, line)
    if proc.wait() != 0:
        partial.unlink(missing_ok=True)
        hint = "" if os.geteuid() == 0 else " (run as root, or allow unprivileged user namespaces)"
        raise DlbenchError(f"mmdebstrap failed with exit code {proc.returncode}{hint}: "
                           + " | ".join(tail))
    os.replace(partial, tarball)
