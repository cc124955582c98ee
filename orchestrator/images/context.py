"""What goes into one image's build, whoever runs it: the context files (laid out as in
the repository), the build arguments from images.yaml, the hash over both that names an
image's inputs, the optional build-inputs/ (the pip step's transport), and the
`docker build` command line that builds the same image by hand from the repository root.

ensure_image (build.py) and docker_build_command both take their arguments from
build_args, so a build by hand cannot drift from the SDK's. Talks to no Docker engine.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.images.locks import (
    WHEEL_RE,
    LockedRequirement,
    normalize_name,
    parse_lock,
    select_wheels,
    wheel_name,
)
from orchestrator.images.options import BuildOptions
from orchestrator.images.spec import FlavourSpec, ImageSpec, get_spec, image_tag
from orchestrator.paths import CONTRACT_DIR, DOCKER_DIR, REPO_ROOT, WORKLOADS_DIR

INSTALL_SCRIPT = DOCKER_DIR / "common" / "install-requirements.sh"
BUILD_INPUTS = "build-inputs"                   # optional; the Dockerfile copies build-input[s]
HASH_SCHEME = "dlbench-image-inputs-v1"  # bump when the hashing below changes

# Docker's predefined proxy build args: used by RUN, kept out of the image history.
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")

# Build args that describe the build, not the image: a new dlbench release alone rebuilds nothing.
_UNHASHED_ARGS = {"DLBENCH_VERSION"}


def _source_files(directory: Path) -> list[Path]:
    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(path)
    return files


def context_files(spec: ImageSpec, flavour: FlavourSpec) -> dict[str, Path]:
    """Context path -> repository file, everything but build-inputs/."""
    files = {
        "docker/Dockerfile": spec.dockerfile,
        f"docker/{spec.framework}/{flavour.lock.name}": flavour.lock,
        "docker/common/install-requirements.sh": INSTALL_SCRIPT,
    }
    for directory in (CONTRACT_DIR, WORKLOADS_DIR):  # the in-image code: workloads and their contract
        for path in _source_files(directory):
            files[f"{directory.name}/{path.relative_to(directory).as_posix()}"] = path
    for rel, path in files.items():
        if not path.is_file():
            raise DlbenchError(f"{path}: missing (needed in the build context as {rel})")
    return files


def build_args(spec: ImageSpec, flavour: FlavourSpec, base: str, lock_sha: str) -> dict[str, str]:
    """The Dockerfile's build arguments for one image: everything images.yaml gives it."""
    args = {
        "BASE_IMAGE": base,
        "FRAMEWORK": spec.framework,
        "DEFAULT_API": spec.default_api,
        "FLAVOUR": flavour.name,
        "FRAMEWORK_VERSION": spec.framework_version,
        "PYTHON_VERSION": spec.python,
        "LOCK_SHA256": lock_sha,
        "DLBENCH_VERSION": dlbench_version(),
        "SYSTEM_PACKAGES": " ".join(spec.system_packages),
        "SOURCE_BUILDS": ",".join(spec.source_builds),
    }
    if flavour.cuda is not None:  # the runtime-cuda stage: its labels and NVIDIA_REQUIRE_CUDA
        args.update({"CUDA_VERSION": flavour.cuda, "CUDNN_VERSION": flavour.cudnn or "",
                     "MIN_DRIVER": flavour.min_driver or "",
                     "CUDA_ARCHES": ",".join(flavour.cuda_arches), "CUDA_PTX": flavour.ptx or "none"})
    return args


def dlbench_version() -> str:
    try:
        from importlib.metadata import version
        return version("dlbench")
    except Exception:  # noqa: BLE001 - not installed: read pyproject
        m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(),
                      re.MULTILINE)
        return m.group(1) if m else "unknown"


def compute_inputs_sha256(files: dict[str, Path], buildargs: dict[str, str], base_id: str) -> str:
    """sha256 over the context files (path, mode, content), the build args and the base id."""
    digest = hashlib.sha256()
    digest.update(f"{HASH_SCHEME}\nbase-id {base_id}\n".encode())
    for key in sorted(set(buildargs) - _UNHASHED_ARGS):
        digest.update(f"arg {key}={buildargs[key]}\n".encode())
    for rel in sorted(files):
        mode = "x" if os.access(files[rel], os.X_OK) else "-"
        digest.update(f"file {rel} {mode} {sha256_file(files[rel])}\n".encode())
    return digest.hexdigest()


def proxy_build_args() -> dict[str, str]:
    return {name: os.environ[name] for name in PROXY_ARGS if os.environ.get(name)}


# ---------------------------------------------------------------------------
# build-inputs/: the pip step's transport
# ---------------------------------------------------------------------------

def unsourced_pins(lock: Path, wheels: Iterable[str | None], has_index: bool) -> list[LockedRequirement]:
    """The lock's pins with a local version label (torch==2.13.0+cpu), which are on no
    default index, that neither a wheel of ``wheels`` (project names) nor an index serves."""
    if has_index:
        return []
    have = set(wheels)
    return [req for req in parse_lock(lock) if "+" in req.version and req.name not in have]


def _index_hint(req: LockedRequirement) -> str:
    return ("PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" if req.name == "torch"
            else "PIP_EXTRA_INDEX_URL to an index that has it")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_build_inputs(flavour: FlavourSpec, options: BuildOptions, dest: Path) -> list[str]:
    """Fill build-inputs/; return a short description of what went in."""
    notes = []
    wheels = select_wheels(flavour.lock, Path(options.wheelhouse)) if options.wheelhouse else []
    for wheel in wheels:
        _link_or_copy(wheel, dest / "wheelhouse" / wheel.name)
    if wheels:
        notes.append(f"{len(wheels)} wheel(s) from {options.wheelhouse}")
    has_index = bool(options.pip_index_url or options.pip_extra_index_url)
    unsourced = unsourced_pins(flavour.lock, map(wheel_name, wheels), has_index)
    if unsourced:
        req = unsourced[0]
        raise DlbenchError(
            f"{flavour.lock}: {req.name}=={req.version} is not on PyPI; set DLBENCH_WHEELHOUSE "
            f"to a directory holding that wheel (sha256 as in the lock) or DLBENCH_{_index_hint(req)}")
    if options.extra_ca:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(options.extra_ca, dest / "ca.crt")
        notes.append(f"extra CA {options.extra_ca}")
    env_lines = []
    if options.pip_index_url:
        env_lines.append(f"PIP_INDEX_URL={shlex.quote(options.pip_index_url)}")
    if options.pip_extra_index_url:
        env_lines.append(f"PIP_EXTRA_INDEX_URL={shlex.quote(options.pip_extra_index_url)}")
    if env_lines:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "pip.env").write_text("\n".join(env_lines) + "\n", encoding="utf-8")
        notes.append("pip index settings")
    return notes


# ---------------------------------------------------------------------------
# A build by hand
# ---------------------------------------------------------------------------

def docker_build_command(framework: str, flavour: str, options: BuildOptions) -> list[str]:
    """The `docker build` command that builds this image from the repository root, whose
    .dockerignore sends what context_files lists (and build-inputs/ if there): the Dockerfile,
    the tag, and the build args ensure_image passes, from the same build_args. Proxy args are
    named without a value (docker takes it from the environment). No labels: ensure_image's
    input label holds the base image's id, which takes an engine to know, so it rebuilds an
    image built this way once."""
    spec, fl = get_spec(framework, flavour)
    args = build_args(spec, fl, options.base_image or fl.base, sha256_file(fl.lock))
    command = ["docker", "build", "-f", spec.dockerfile.relative_to(REPO_ROOT).as_posix(),
               "-t", image_tag(framework, flavour), "--network", options.network_mode]
    if options.no_cache:
        command.append("--no-cache")
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    for name in proxy_build_args():
        command += ["--build-arg", name]
    return [*command, "."]


def _wheel_for(req: LockedRequirement, wheelhouse: Path) -> Path | None:
    """A wheel of ``wheelhouse`` named for this pin (by its name only: not hashed here)."""
    for wheel in sorted(Path(wheelhouse).glob("*.whl")):
        m = WHEEL_RE.match(wheel.name)
        if m and normalize_name(m["name"]) == req.name and m["version"].lower() == req.version.lower():
            return wheel
    return None


def by_hand_notes(framework: str, flavour: str, options: BuildOptions,
                  build_inputs: Path = REPO_ROOT / BUILD_INPUTS) -> list[str]:
    """What a build from the repository root lacks that ensure_image would put in its
    build-inputs/ (a wheel for a local-version pin, the extra CA), one line each."""
    _, fl = get_spec(framework, flavour)
    lock = fl.lock.relative_to(REPO_ROOT).as_posix()
    notes = []
    wheels = map(wheel_name, (build_inputs / "wheelhouse").glob("*.whl"))
    for req in unsourced_pins(fl.lock, wheels, (build_inputs / "pip.env").is_file()):
        wheel = _wheel_for(req, options.wheelhouse) if options.wheelhouse else None
        found = f" ({wheel} is one)" if wheel else ""
        notes.append(f"{lock} pins {req.name}=={req.version}, which is not on PyPI: put its wheel{found} in "
                     f"{BUILD_INPUTS}/wheelhouse/, or {_index_hint(req)} in {BUILD_INPUTS}/pip.env")
    if options.extra_ca and not (build_inputs / "ca.crt").is_file():
        notes.append(f"the pip step needs the extra CA {options.extra_ca}: copy it to {BUILD_INPUTS}/ca.crt")
    return notes
