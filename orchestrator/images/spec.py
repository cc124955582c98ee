"""docker/images.yaml, the pinned matrix: which images exist, what each is built from, and
what it is called. Reads and validates the file (one-line errors naming the field); knows
nothing of Docker.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

from orchestrator.errors import DlbenchError
from orchestrator.paths import DOCKER_DIR, cache_dir

IMAGES_FILE = DOCKER_DIR / "images.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"          # one file for every framework and flavour
IMAGE_REPO_PREFIX = "dlbench"
FLAVOURS = ("cpu", "cuda")
SCHEMA_VERSION = 1

_DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")
_PYTHON_RE = re.compile(r"^3\.[0-9]+$")


@dataclass(frozen=True)
class FlavourSpec:
    name: str                 # cpu | cuda
    base: str                 # digest-pinned default base image
    lock: Path                # absolute path of the requirements .txt
    cuda: str | None = None
    cudnn: str | None = None
    min_driver: str | None = None     # oldest NVIDIA driver branch its CUDA runs on, e.g. "580"
    cuda_arches: tuple[str, ...] = ()  # compute capabilities its kernels are built for (SASS)
    ptx: str | None = None            # the compute capability of the PTX it carries, if any


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
_FLAVOUR_KEYS = {"base", "lock", "cuda", "cudnn", "min_driver", "cuda_arches", "ptx"}
_CUDA_ONLY_KEYS = ("cuda", "cudnn", "min_driver", "cuda_arches", "ptx")
_MINOR_RE = re.compile(r"^[0-9]+\.[0-9]+$")          # 12.9, and compute capabilities: 8.6
_DRIVER_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}$")  # a branch (580) or a full 580.65.06


def version_key(text: str) -> tuple[int, ...]:
    """'8.6' -> (8, 6), '580.65.06' -> (580, 65, 6): versions compared as numbers."""
    return tuple(int(part) for part in text.split("."))


def _name_list(path, where, entry, key, pattern) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.match(v) for v in value):
        _fail(path, f"{where}.{key}", "must be a list of package names")
    return tuple(value)


def _fail(path: Path, where: str, message: str) -> NoReturn:
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


def _cuda_fields(path: Path, where: str, flavour: str, fl: dict) -> dict:
    """A cuda flavour's CUDA, cuDNN, driver and GPU architectures (all required); none of
    them on another flavour."""
    if flavour != "cuda":
        for key in _CUDA_ONLY_KEYS:
            if key in fl:
                _fail(path, f"{where}.{key}", "only a cuda flavour has this field")
        return {}
    fields = {key: _str_field(path, where, fl, key, _MINOR_RE, ' (major.minor, e.g. "12.9")')
              for key in ("cuda", "cudnn")}
    fields["min_driver"] = _str_field(path, where, fl, "min_driver", _DRIVER_RE,
                                      ' (a driver branch such as "580")')
    arches = fl.get("cuda_arches")
    if (not isinstance(arches, list) or not arches
            or not all(isinstance(a, str) and _MINOR_RE.match(a) for a in arches)):
        _fail(path, f"{where}.cuda_arches", 'must be a non-empty list of compute capabilities '
              'such as ["8.0", "9.0"] (quoted)')
    if sorted(set(arches), key=version_key) != arches:
        _fail(path, f"{where}.cuda_arches", "must list each compute capability once, oldest first")
    ptx = fl.get("ptx")
    if ptx is not False and not (isinstance(ptx, str) and _MINOR_RE.match(ptx)):
        _fail(path, f"{where}.ptx", 'must be false (no PTX) or the compute capability of the '
              f'PTX the image carries, e.g. "9.0" (quoted), got {ptx!r}')
    return {**fields, "cuda_arches": tuple(arches), "ptx": ptx or None}


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
            fspecs[name] = FlavourSpec(name, base, lock, **_cuda_fields(path, fwhere, name, fl))
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
