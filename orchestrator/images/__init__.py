"""Framework images: the pinned matrix (docker/images.yaml), builds and checks.

Everything goes through the docker SDK (never the docker CLI). A build:

1. resolves the base image (the digest-pinned public one, or an override such as a
   base made locally with `make_base_image` on a machine without registry access);
2. hashes its inputs: the one Dockerfile, shared install script, lock file, the workloads/
   package, the build arguments and the base image id. An image with the same tag
   whose `org.dlbench.inputs-sha256` label matches is reused as it is;
3. otherwise assembles a small build context in a temporary directory, laid out like
   the repository (so the Dockerfiles also build by hand from the repository root):
       docker/Dockerfile   docker/<framework>/requirements-<flavour>.txt
       docker/common/install-requirements.sh   workloads/   build-inputs/ (optional)
   and builds it with the classic builder, streaming progress lines.

build-inputs/ carries the transport settings of the pip step: wheels from a
wheelhouse that the lock names (with a matching sha256), an extra CA certificate,
index URLs. They are not part of the input hash: the lock's hashes fix every file
pip installs, wherever it came from, and none of them reaches the final image.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import yaml

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.paths import CONTRACT_DIR, DOCKER_DIR, REPO_ROOT, WORKLOADS_DIR, cache_dir

IMAGES_FILE = DOCKER_DIR / "images.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"          # one file for every framework and flavour
INSTALL_SCRIPT = DOCKER_DIR / "common" / "install-requirements.sh"
IMAGE_REPO_PREFIX = "dlbench"
DEFAULT_BASE_TAG = "local/bookworm-python:3.11"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
FLAVOURS = ("cpu", "cuda")
SCHEMA_VERSION = 1
HASH_SCHEME = "dlbench-image-inputs-v1"  # bump when the hashing below changes

LABEL_INPUTS = "org.dlbench.inputs-sha256"
LABEL_BASE_ID = "org.dlbench.base-image-id"
LABEL_BASE = "org.dlbench.base-image"

MAKE_BASE_HINT = ("make one without a registry with `make base-image` (or `dlbench images base`), "
                  f"then set DLBENCH_BASE_IMAGE={DEFAULT_BASE_TAG}")

Progress = Callable[[str], None] | None

_DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")
_PYTHON_RE = re.compile(r"^3\.[0-9]+$")


# ---------------------------------------------------------------------------
# images.yaml
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FlavourSpec:
    name: str                 # cpu | cuda
    base: str                 # digest-pinned default base image
    lock: Path                # absolute path of the requirements .txt
    cuda: str | None = None
    cudnn: str | None = None
    min_driver: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    framework: str
    framework_version: str
    python: str
    apis: tuple[str, ...]
    flavours: dict[str, FlavourSpec]
    system_packages: tuple[str, ...] = ()   # Debian packages the framework needs at run time
    source_builds: tuple[str, ...] = ()     # locked sdists built in the image (no wheel exists)
    compile_cache: bool = False             # runs share a per-image cache dir (e.g. Theano's C)
    unavailable: dict[str, str] = field(default_factory=dict)  # flavour -> why there is none

    @property
    def dockerfile(self) -> Path:
        return DOCKERFILE

    @property
    def default_api(self) -> str:
        return self.apis[0]


_TOP_KEYS = {"schema_version", "images"}
_IMAGE_KEYS = {"framework_version", "python", "apis", "flavours", "system_packages",
               "source_builds", "compile_cache"}
_DEB_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_PKG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FLAVOUR_KEYS = {"base", "lock", "cuda", "cudnn", "min_driver"}


def _name_list(path, where, entry, key, pattern) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        _fail(path, f"{where}.{key}", "must be a list of package names")
    return tuple(value)


def _fail(path: Path, where: str, message: str):
    raise DlbenchError(f"{path}: {where}: {message}")


def _str_field(path, where, mapping, key, pattern=None, hint="", required=True):
    value = mapping.get(key)
    if value is None:
        if required:
            _fail(path, f"{where}.{key}", "missing")
        return None
    if not isinstance(value, str) or not value.strip():
        _fail(path, f"{where}.{key}", f"must be a non-empty string (quote it), got {value!r}")
    if pattern is not None and not pattern.match(value):
        _fail(path, f"{where}.{key}", f"{value!r} is not valid{hint}")
    return value


def _unknown_keys(path, where, mapping, allowed):
    extra = sorted(set(mapping) - allowed)
    if extra:
        _fail(path, f"{where}.{extra[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def load_images(path: Path | str | None = None, check_locks: bool = True) -> dict[str, ImageSpec]:
    """Read and validate images.yaml; DlbenchError names the file and the field.
    check_locks=False skips the lock files' existence (docker/lock.py makes them)."""
    path = Path(path) if path else IMAGES_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DlbenchError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise DlbenchError(f"{path}: not valid YAML{at}") from None
    if not isinstance(raw, dict):
        _fail(path, "(top level)", "must be a mapping with schema_version and images")
    _unknown_keys(path, "(top level)", raw, _TOP_KEYS)
    if raw.get("schema_version") != SCHEMA_VERSION:
        _fail(path, "schema_version", f"must be {SCHEMA_VERSION}, got {raw.get('schema_version')!r}")
    images = raw.get("images")
    if not isinstance(images, dict) or not images:
        _fail(path, "images", "must be a non-empty mapping framework -> image")
    lock_dir_base = path.parent
    specs: dict[str, ImageSpec] = {}
    for framework, entry in images.items():
        where = f"images.{framework}"
        if not isinstance(framework, str) or not _NAME_RE.match(framework):
            _fail(path, where, "framework names are lower-case letters, digits, - and _")
        if not isinstance(entry, dict):
            _fail(path, where, "must be a mapping")
        _unknown_keys(path, where, entry, _IMAGE_KEYS)
        version = _str_field(path, where, entry, "framework_version", _VERSION_RE,
                             " (a version such as \"2.13.0\")")
        python = _str_field(path, where, entry, "python", _PYTHON_RE, " (a minor such as \"3.11\")")
        apis = entry.get("apis")
        if (not isinstance(apis, list) or not apis
                or not all(isinstance(a, str) and _NAME_RE.match(a) for a in apis)):
            _fail(path, f"{where}.apis", "must be a non-empty list of API names")
        if len(set(apis)) != len(apis):
            _fail(path, f"{where}.apis", "lists an API twice")
        flavours = entry.get("flavours")
        if not isinstance(flavours, dict) or not flavours:
            _fail(path, f"{where}.flavours", f"must map flavours ({', '.join(FLAVOURS)}) to settings")
        fspecs, unavailable = {}, {}
        for name, fl in flavours.items():
            fwhere = f"{where}.flavours.{name}"
            if name not in FLAVOURS:
                _fail(path, fwhere, f"unknown flavour (known: {', '.join(FLAVOURS)})")
            if isinstance(fl, dict) and set(fl) == {"unavailable"}:
                unavailable[name] = _str_field(path, fwhere, fl, "unavailable")
                continue
            if not isinstance(fl, dict):
                _fail(path, fwhere, "must be a mapping (or {unavailable: <why>})")
            _unknown_keys(path, fwhere, fl, _FLAVOUR_KEYS)
            base = _str_field(path, fwhere, fl, "base", _DIGEST_RE,
                              " (pin it by digest: name:tag@sha256:<64 hex>)")
            lock_name = _str_field(path, fwhere, fl, "lock")
            lock = lock_dir_base / framework / lock_name
            if "/" in lock_name or not lock_name.endswith(".txt"):
                _fail(path, f"{fwhere}.lock", f"{lock_name!r}: a .txt file name next to the Dockerfile")
            if check_locks and not lock.is_file():
                _fail(path, f"{fwhere}.lock", f"{lock} does not exist (run `python docker/lock.py`)")
            cuda = _str_field(path, fwhere, fl, "cuda", required=name == "cuda")
            cudnn = _str_field(path, fwhere, fl, "cudnn", required=name == "cuda")
            min_driver = _str_field(path, fwhere, fl, "min_driver", required=False)
            fspecs[name] = FlavourSpec(name, base, lock, cuda, cudnn, min_driver)
        if not fspecs:
            _fail(path, f"{where}.flavours", "at least one flavour must be available")
        compile_cache = entry.get("compile_cache", False)
        if not isinstance(compile_cache, bool):
            _fail(path, f"{where}.compile_cache", f"must be true or false, got {compile_cache!r}")
        specs[framework] = ImageSpec(
            framework, version, python, tuple(apis), fspecs,
            system_packages=_name_list(path, where, entry, "system_packages", _DEB_RE),
            source_builds=_name_list(path, where, entry, "source_builds", _PKG_RE),
            compile_cache=compile_cache, unavailable=unavailable)
    return specs


def get_spec(framework: str, flavour: str, images: dict[str, ImageSpec] | None = None
             ) -> tuple[ImageSpec, FlavourSpec]:
    # Only the lock of the image asked for must exist: one framework's missing lock
    # must not stop the others.
    images = images if images is not None else load_images(check_locks=False)
    if framework not in images:
        raise DlbenchError(f"no image for framework {framework!r} in {IMAGES_FILE} "
                           f"(known: {', '.join(sorted(images))})")
    spec = images[framework]
    if flavour in spec.unavailable:
        raise DlbenchError(f"{framework} has no {flavour} image: {spec.unavailable[flavour]} "
                           f"({IMAGES_FILE}: images.{framework}.flavours.{flavour})")
    if flavour not in spec.flavours:
        raise DlbenchError(f"{IMAGES_FILE}: images.{framework}.flavours has no {flavour!r} "
                           f"(known: {', '.join(spec.flavours)})")
    lock = spec.flavours[flavour].lock
    if not lock.is_file():
        raise DlbenchError(f"{IMAGES_FILE}: images.{framework}.flavours.{flavour}.lock: {lock} "
                           "does not exist (run `python docker/lock.py`)")
    return spec, spec.flavours[flavour]


def compile_cache_dir(framework: str, flavour: str, environment_id: str) -> Path | None:
    """The host directory the runs of one image (or venv) share for compiled code, when its
    images.yaml entry asks for one (compile_cache: true). Keyed by the environment's id, so
    a rebuilt image never reads code compiled by another."""
    spec, _ = get_spec(framework, flavour)
    if not spec.compile_cache:
        return None
    key = environment_id.split(":")[-1][:16]
    return cache_dir() / "compile" / f"{framework}-{flavour}-{key}"


def image_tag(framework: str, flavour: str, images: dict[str, ImageSpec] | None = None) -> str:
    """dlbench/<framework>:<framework_version>-<flavour>, e.g. dlbench/pytorch:2.13.0-cpu."""
    spec, _ = get_spec(framework, flavour, images)
    return f"{IMAGE_REPO_PREFIX}/{framework}:{spec.framework_version}-{flavour}"


# ---------------------------------------------------------------------------
# Lock files
# ---------------------------------------------------------------------------

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


_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


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
        m = _WHEEL_RE.match(wheel.name)
        if not m:
            continue
        key = (normalize_name(m.group("name")), m.group("version").lower())
        hashes = wanted.get(key)
        if hashes and sha256_file(wheel) in hashes:
            chosen.append(wheel)
    return chosen


# ---------------------------------------------------------------------------
# Build options
# ---------------------------------------------------------------------------

@dataclass
class BuildOptions:
    """How to build; none of these settings changes what ends up in the image."""
    base_image: str | None = None          # override of images.yaml's base
    extra_ca: Path | None = None           # CA file added to the pip step's bundle
    wheelhouse: Path | None = None         # directory of wheels for --find-links
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    network_mode: str = "host"             # the pip step needs the network
    no_cache: bool = False                 # build without the layer cache
    notes: list[str] = field(default_factory=list, compare=False)  # where settings came from

    ENV = {"base_image": "DLBENCH_BASE_IMAGE", "extra_ca": "DLBENCH_EXTRA_CA",
           "wheelhouse": "DLBENCH_WHEELHOUSE", "pip_index_url": "DLBENCH_PIP_INDEX_URL",
           "pip_extra_index_url": "DLBENCH_PIP_EXTRA_INDEX_URL",
           "network_mode": "DLBENCH_BUILD_NETWORK"}

    @classmethod
    def from_env(cls, environ=None, host_pip: bool = True, **overrides) -> "BuildOptions":
        """DLBENCH_* variables first. With host_pip, a wheelhouse and a CA the host's own
        pip is configured with (PIP_FIND_LINKS / PIP_CERT or `pip config`) fill the gaps:
        the lock's hashes decide what is installed, so borrowing them is safe.
        DLBENCH_BUILD_HOST_PIP=0 turns that off."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for attr, var in cls.ENV.items():
            value = (env.get(var) or "").strip()
            if value:
                values[attr] = Path(value) if attr in ("extra_ca", "wheelhouse") else value
        values.update({k: v for k, v in overrides.items() if v is not None})
        notes = []
        if host_pip and env.get("DLBENCH_BUILD_HOST_PIP", "1") != "0" and (
                "wheelhouse" not in values or "extra_ca" not in values):
            find_links, cert = host_pip_settings(env)
            if "wheelhouse" not in values and find_links:
                values["wheelhouse"] = find_links
                notes.append(f"wheelhouse {find_links} from the host's pip find-links")
            if "extra_ca" not in values and cert:
                values["extra_ca"] = cert
                notes.append(f"extra CA {cert} from the host's pip cert")
        options = cls(**values, notes=notes)
        options.validate()
        return options

    def validate(self) -> None:
        if self.extra_ca is not None and not Path(self.extra_ca).is_file():
            raise DlbenchError(f"extra CA {self.extra_ca} (DLBENCH_EXTRA_CA): no such file")
        if self.wheelhouse is not None and not Path(self.wheelhouse).is_dir():
            raise DlbenchError(f"wheelhouse {self.wheelhouse} (DLBENCH_WHEELHOUSE): no such directory")


def host_pip_settings(environ=None) -> tuple[Path | None, Path | None]:
    """(first local find-links directory, cert file) of the host's pip, if any."""
    env = os.environ if environ is None else environ
    find_links, cert = env.get("PIP_FIND_LINKS", ""), env.get("PIP_CERT", "")
    if not find_links or not cert:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=dict(env),
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        config = {}
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


# ---------------------------------------------------------------------------
# Image info
# ---------------------------------------------------------------------------

@dataclass
class ImageInfo:
    tag: str
    id: str
    repo_digest: str | None
    size_bytes: int
    created: str
    framework: str
    framework_version: str
    python: str
    flavour: str
    lock_sha256: str
    base_image: str | None
    inputs_sha256: str | None
    labels: dict = field(default_factory=dict)
    built: bool = False          # True when this call built it, False when it was reused

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_image(cls, image, tag: str, built: bool = False) -> "ImageInfo":
        attrs = image.attrs
        labels = dict((attrs.get("Config") or {}).get("Labels") or {})
        digests = attrs.get("RepoDigests") or []
        return cls(
            tag=tag, id=image.id, repo_digest=digests[0] if digests else None,
            size_bytes=int(attrs.get("Size") or 0), created=attrs.get("Created", ""),
            framework=labels.get("org.dlbench.framework", ""),
            framework_version=labels.get("org.dlbench.framework-version", ""),
            python=labels.get("org.dlbench.python", ""),
            flavour=labels.get("org.dlbench.flavour", ""),
            lock_sha256=labels.get("org.dlbench.lock-sha256", ""),
            base_image=labels.get(LABEL_BASE), inputs_sha256=labels.get(LABEL_INPUTS),
            labels=labels, built=built)


# ---------------------------------------------------------------------------
# Inputs, context, build
# ---------------------------------------------------------------------------

def _source_files(directory: Path) -> list[Path]:
    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(path)
    return files


def _context_files(spec: ImageSpec, flavour: FlavourSpec) -> dict[str, Path]:
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


def _buildargs(spec: ImageSpec, flavour: FlavourSpec, base: str, lock_sha: str) -> dict:
    return {
        "BASE_IMAGE": base,
        "FRAMEWORK": spec.framework,
        "DEFAULT_API": spec.default_api,
        "FLAVOUR": flavour.name,
        "FRAMEWORK_VERSION": spec.framework_version,
        "PYTHON_VERSION": spec.python,
        "LOCK_SHA256": lock_sha,
        "DLBENCH_VERSION": _dlbench_version(),
        "SYSTEM_PACKAGES": " ".join(spec.system_packages),
        "SOURCE_BUILDS": ",".join(spec.source_builds),
    }


def _dlbench_version() -> str:
    try:
        from importlib.metadata import version
        return version("dlbench")
    except Exception:  # noqa: BLE001 - not installed: read pyproject
        m = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(),
                      re.MULTILINE)
        return m.group(1) if m else "unknown"


# Build args that describe the build, not the image: a new dlbench release alone rebuilds nothing.
_UNHASHED_ARGS = {"DLBENCH_VERSION"}


def compute_inputs_sha256(files: dict[str, Path], buildargs: dict, base_id: str) -> str:
    """sha256 over the context files (path, mode, content), the build args and the base id."""
    digest = hashlib.sha256()
    digest.update(f"{HASH_SCHEME}\nbase-id {base_id}\n".encode())
    for key in sorted(set(buildargs) - _UNHASHED_ARGS):
        digest.update(f"arg {key}={buildargs[key]}\n".encode())
    for rel in sorted(files):
        mode = "x" if os.access(files[rel], os.X_OK) else "-"
        digest.update(f"file {rel} {mode} {sha256_file(files[rel])}\n".encode())
    return digest.hexdigest()


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
        _say(progress, f"base image {base} not found locally, pulling it")
        try:
            return client.images.pull(base)
        except docker.errors.APIError as exc:
            reason = f"pull failed: {_first_line(exc.explanation or str(exc))}"
    raise DlbenchError(f"base image {base} is not available locally and {reason}; {MAKE_BASE_HINT}")


def _say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else ""


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_inputs(flavour: FlavourSpec, options: BuildOptions, dest: Path) -> list[str]:
    """Fill build-inputs/; return a short description of what went in."""
    notes = []
    wheels = select_wheels(flavour.lock, Path(options.wheelhouse)) if options.wheelhouse else []
    for wheel in wheels:
        _link_or_copy(wheel, dest / "wheelhouse" / wheel.name)
    if wheels:
        notes.append(f"{len(wheels)} wheel(s) from {options.wheelhouse}")
    # A pin with a local version label (torch==2.13.0+cpu) is on no default index.
    have = {normalize_name(_WHEEL_RE.match(w.name).group("name")) for w in wheels}
    has_index = bool(options.pip_index_url or options.pip_extra_index_url)
    for req in parse_lock(flavour.lock):
        if "+" in req.version and req.name not in have and not has_index:
            hint = (" or DLBENCH_PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu"
                    if req.name == "torch" else " or DLBENCH_PIP_EXTRA_INDEX_URL to an index that has it")
            raise DlbenchError(
                f"{flavour.lock}: {req.name}=={req.version} is not on PyPI; set DLBENCH_WHEELHOUSE "
                f"to a directory holding that wheel (sha256 as in the lock){hint}")
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


def _proxy_buildargs() -> dict:
    """Docker's predefined proxy build args: used by RUN, kept out of the image history."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return {name: os.environ[name] for name in names if os.environ.get(name)}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOISE = re.compile(r"^(---> |Removing intermediate container|Step \d+/\d+ : (ARG|LABEL|ENV)\b)")


def _build_log_path(framework: str, flavour: str) -> Path:
    return cache_dir() / "logs" / f"build-{framework}-{flavour}.log"


def _hint_for(log: Iterable[str]) -> str:
    text = "\n".join(log)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("; TLS to the package index failed: behind a TLS-intercepting proxy pass its CA "
                "with DLBENCH_EXTRA_CA=/path/to/ca.pem")
    if "THESE PACKAGES DO NOT MATCH THE HASHES" in text:
        return "; a downloaded file does not match the lock's sha256 (mirror serving other files?)"
    if "No matching distribution" in text or "Could not find a version" in text:
        return ("; pip found no file for a pinned package: set DLBENCH_WHEELHOUSE or "
                "DLBENCH_PIP_INDEX_URL / DLBENCH_PIP_EXTRA_INDEX_URL")
    if "Temporary failure in name resolution" in text or "Failed to establish" in text:
        return "; no network in the build: builds need network_mode host and a reachable package index"
    return ""


def ensure_image(client, framework: str, flavour: str, options: BuildOptions | None = None,
                 progress: Progress = None, rebuild: bool = False) -> ImageInfo:
    """The image for framework/flavour, built only when its inputs changed (or rebuild)."""
    import docker.errors

    options = options or BuildOptions.from_env()
    options.validate()
    spec, fl = get_spec(framework, flavour)
    tag = image_tag(framework, flavour)
    base = options.base_image or fl.base
    for note in options.notes:
        _say(progress, f"build option: {note}")
    base_image = resolve_base(client, base, progress)
    lock_sha = sha256_file(fl.lock)
    buildargs = _buildargs(spec, fl, base, lock_sha)
    files = _context_files(spec, fl)
    inputs = compute_inputs_sha256(files, buildargs, base_image.id)

    try:
        existing = client.images.get(tag)
    except docker.errors.ImageNotFound:
        existing = None
    if existing is not None and not rebuild:
        labels = (existing.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_INPUTS) == inputs:
            _say(progress, f"{tag}: up to date ({existing.short_id})")
            return ImageInfo.from_image(existing, tag, built=False)
        _say(progress, f"{tag}: inputs changed, rebuilding")

    with tempfile.TemporaryDirectory(prefix="dlbench-build-") as tmp:
        ctx = Path(tmp)
        for rel, src in files.items():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
        for note in _build_inputs(fl, options, ctx / "build-inputs"):
            _say(progress, f"build input: {note}")
        _say(progress, f"building {tag} from {base}")
        labels = {LABEL_INPUTS: inputs, LABEL_BASE: base, LABEL_BASE_ID: base_image.id}
        image_id = _run_build(client, ctx, spec, fl, tag, {**buildargs, **_proxy_buildargs()},
                              labels, options, progress)
    image = client.images.get(image_id or tag)
    _say(progress, f"{tag}: built {image.short_id}, {image.attrs.get('Size', 0) / 1e6:.0f} MB")
    if existing is not None and existing.id != image.id:
        try:  # the replaced image, now untagged; kept if a container still uses it
            client.images.remove(existing.id, noprune=False)
        except docker.errors.APIError:
            pass
    return ImageInfo.from_image(image, tag, built=True)


def _run_build(client, ctx: Path, spec: ImageSpec, fl: FlavourSpec, tag: str, buildargs: dict,
               labels: dict, options: BuildOptions, progress: Progress) -> str | None:
    import docker.errors
    import requests.exceptions

    log_path = _build_log_path(spec.framework, fl.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    image_id, error = None, None
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            stream = client.api.build(
                path=str(ctx), dockerfile="docker/Dockerfile", tag=tag,
                buildargs=buildargs, labels=labels, network_mode=options.network_mode,
                nocache=options.no_cache, rm=True, forcerm=True, pull=False, decode=True,
                timeout=None)  # no read timeout: a pip step can be silent for minutes
            for chunk in stream:
                if "error" in chunk:
                    error = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    log.write(f"ERROR: {error}\n")
                    continue
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                text = _ANSI.sub("", chunk.get("stream") or chunk.get("status") or "")
                for line in text.splitlines():
                    line = line.rstrip()
                    if not line:
                        continue
                    log.write(line + "\n")
                    m = re.match(r"^Successfully built ([0-9a-f]+)$", line)
                    if m and image_id is None:
                        image_id = m.group(1)
                    if not _NOISE.match(line.strip()):
                        tail.append(line)
                        _say(progress, line)
        except docker.errors.APIError as exc:
            error = exc.explanation or str(exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            error = f"lost the Docker engine during the build ({type(exc).__name__}: {exc})"
    if error:
        lines = "\n".join(f"  | {line}" for line in tail)
        raise DlbenchError(f"building {tag} failed: {_first_line(error)}{_hint_for(tail)} "
                           f"(full log: {log_path})\n{lines}")
    return image_id


def require_image(client, framework: str, flavour: str) -> ImageInfo:
    """For --no-build: the image must exist already (no check of its inputs)."""
    import docker.errors

    tag = image_tag(framework, flavour)
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise DlbenchError(
            f"image {tag} is not built (and --no-build was given); build it with "
            f"`dlbench images build {framework} --flavour {flavour}`") from None
    info = ImageInfo.from_image(image, tag)
    if info.framework != framework or info.flavour != flavour:
        raise DlbenchError(f"image {tag} carries labels for {info.framework or '?'}/"
                           f"{info.flavour or '?'}, not a dlbench {framework}/{flavour} image; rebuild it")
    return info


def image_status(client, framework: str, flavour: str, options: BuildOptions | None = None) -> str:
    """'missing', 'stale' (inputs changed since it was built) or 'current'; builds nothing."""
    import docker.errors

    spec, fl = get_spec(framework, flavour)
    tag = image_tag(framework, flavour)
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return "missing"
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    base = (options.base_image if options else None) or labels.get(LABEL_BASE) or fl.base
    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound:
        base_id = labels.get(LABEL_BASE_ID, "")
    inputs = compute_inputs_sha256(_context_files(spec, fl),
                                   _buildargs(spec, fl, base, sha256_file(fl.lock)), base_id)
    return "current" if labels.get(LABEL_INPUTS) == inputs else "stale"


# ---------------------------------------------------------------------------
# A base image without a registry
# ---------------------------------------------------------------------------

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
        _say(progress, f"reusing base tarball {tarball}")
    tar_sha = sha256_file(tarball)
    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    try:
        existing = client.images.get(tag)
        labels = (existing.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get("org.dlbench.base-tarball-sha256") == tar_sha and not rebuild:
            _say(progress, f"{tag}: already imported ({existing.short_id})")
            return tag
    except Exception:  # noqa: BLE001 - not there yet
        pass
    _say(progress, f"importing {tarball} as {tag}")
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
        raise DlbenchError(f"importing {tarball} as {tag} failed: {_first_line(str(exc))}") from None
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
    _say(progress, "running " + " ".join(shlex.quote(c) for c in cmd))
    tail: deque[str] = deque(maxlen=10)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            _say(progress, line)
    if proc.wait() != 0:
        partial.unlink(missing_ok=True)
        hint = "" if os.geteuid() == 0 else " (run as root, or allow unprivileged user namespaces)"
        raise DlbenchError(f"mmdebstrap failed with exit code {proc.returncode}{hint}: "
                           + " | ".join(tail))
    os.replace(partial, tarball)
