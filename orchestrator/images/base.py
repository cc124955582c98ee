"""The base image every framework image starts from: the digest-pinned public one, found
or pulled, or on a machine without a container registry a local Debian one (minbase +
python3) made with mmdebstrap and imported through the docker SDK.

Where the pinned base cannot be pulled, a build makes the local one by itself (when
mmdebstrap is installed) and remembers it in a small state file beside the cached tarball,
so later builds use it without asking the registry again or needing DLBENCH_BASE_IMAGE,
which, when set, always wins. Without mmdebstrap no image can be built at all; `missing_base`
says so before a suite picks the Docker backend.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contract.jsonio import write_json_atomic
from orchestrator.errors import DlbenchError
from orchestrator.fileio import read_json_or_none, sha256_file
from orchestrator.images.progress import Progress, first_line, say
from orchestrator.paths import cache_dir

DEFAULT_BASE_TAG = "local/bookworm-python:3.11"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")

MAKE_BASE_HINT = ("make one without a registry with `make base-image` (or `dlbench images base`), "
                  f"then set DLBENCH_BASE_IMAGE={DEFAULT_BASE_TAG}")
LABEL_TARBALL_SHA = "org.dlbench.base-tarball-sha256"
STATE_SCHEMA = 1


class BaseUnavailable(DlbenchError):
    """The pinned base cannot be pulled and mmdebstrap is not there to make a local one."""


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


def base_for_build(client, pinned: str, override: str | None = None,
                   progress: Progress = None) -> tuple[str, Any]:
    """(reference, image) of the base a build starts from: the override (DLBENCH_BASE_IMAGE)
    when given; else the pinned base, present or pulled; else the local base made for it
    earlier (remembered); else one made now with mmdebstrap, and remembered."""
    import docker.errors

    if override:
        return override, resolve_base(client, override, progress)
    try:
        return pinned, client.images.get(pinned)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:
        raise DlbenchError(f"base image {pinned}: {exc.explanation or exc}") from None
    remembered = _remembered_image(client, pinned, progress)
    if remembered is not None:
        return remembered
    say(progress, f"base image {pinned} not found locally, pulling it")
    try:
        return pinned, client.images.pull(pinned)
    except docker.errors.APIError as exc:
        reason = first_line(exc.explanation or str(exc))
    if shutil.which("mmdebstrap") is None:
        raise BaseUnavailable(f"base image {pinned} cannot be pulled ({reason}) and {NO_MMDEBSTRAP}")
    say(progress, f"base image {pinned} cannot be pulled ({reason}); making a local Debian base "
                  f"with mmdebstrap instead, remembered for later builds in {state_file()}")
    tag = make_base_image(client, progress=progress)
    remember_base(pinned, tag, default_base_tarball())
    return tag, client.images.get(tag)


BASE_FIX = ("install mmdebstrap (it makes a local base, remembered for later builds) or set "
            "DLBENCH_BASE_IMAGE to a base image present in the engine")
NO_MMDEBSTRAP = f"mmdebstrap is not installed to make a local one; {BASE_FIX}"


def missing_base(client, pinned: Iterable[str], override: str | None = None) -> str | None:
    """Why no framework image can be built on this engine (a few words), or None when one
    can: asked before a suite picks the Docker backend, so that `--backend auto` runs on the
    local backend instead. Pulls what it can: a build needs it next anyway."""
    import docker.errors

    if override or shutil.which("mmdebstrap"):
        return None
    for ref in sorted(pinned):
        try:
            client.images.get(ref)
            continue
        except docker.errors.ImageNotFound:
            pass
        entry = _remembered_entry(ref)
        if entry is not None and Path(entry["tarball"]).is_file():
            continue  # an import needs no mmdebstrap
        try:
            client.images.pull(ref)
        except docker.errors.APIError as exc:
            return (f"the base image {ref} cannot be pulled "
                    f"({first_line(exc.explanation or str(exc))}) and mmdebstrap is not installed")
    return None


def state_file() -> Path:
    """Which local base stands in for which pinned base that could not be pulled here."""
    return cache_dir() / "base" / "local-base.json"


def remembered_bases() -> dict[str, dict]:
    """pinned reference -> {"tag", "tarball", "tarball_sha256"}; {} when none (or unreadable)."""
    state = read_json_or_none(state_file())
    bases = state.get("bases") if isinstance(state, dict) else None
    return {ref: entry for ref, entry in (bases or {}).items()
            if isinstance(entry, dict) and all(isinstance(entry.get(k), str)
                                               for k in ("tag", "tarball", "tarball_sha256"))}


def remember_base(pinned: str, tag: str, tarball: Path) -> None:
    bases = remembered_bases()
    bases[pinned] = {"tag": tag, "tarball": str(tarball), "tarball_sha256": sha256_file(tarball)}
    state_file().parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(state_file()), {"schema_version": STATE_SCHEMA, "bases": bases})


def _remembered_entry(pinned: str) -> dict | None:
    return remembered_bases().get(pinned)


def _remembered_image(client, pinned: str, progress: Progress):
    """(tag, image) of the local base remembered for `pinned`, imported again from its
    tarball when the engine lost it; None when nothing usable is remembered."""
    import docker.errors

    entry = _remembered_entry(pinned)
    if entry is None:
        return None
    tag = entry["tag"]
    try:
        image = client.images.get(tag)
        if _labels(image).get(LABEL_TARBALL_SHA) == entry["tarball_sha256"]:
            say(progress, f"base image {pinned} cannot be pulled here: using the local base {tag} "
                          f"(remembered in {state_file()}; DLBENCH_BASE_IMAGE overrides)")
            return tag, image
    except docker.errors.ImageNotFound:
        pass
    tarball = Path(entry["tarball"])
    if not tarball.is_file():
        return None  # forgotten: the pull (or mmdebstrap) decides again
    make_base_image(client, tag=tag, cache_tarball=tarball, progress=progress)
    remember_base(pinned, tag, tarball)
    return tag, client.images.get(tag)


def _labels(image) -> dict:
    return (image.attrs.get("Config") or {}).get("Labels") or {}


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
        if _labels(existing).get(LABEL_TARBALL_SHA) == tar_sha and not rebuild:
            say(progress, f"{tag}: already imported ({existing.short_id})")
            return tag
    except Exception:  # noqa: BLE001 - not there yet
        pass
    say(progress, f"importing {tarball} as {tag}")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        f"LABEL {LABEL_TARBALL_SHA}={tar_sha}",
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
