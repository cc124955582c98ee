"""Framework images through the docker SDK (never the docker CLI): build one when its
inputs changed, reuse it otherwise, or require that it exists.

A build:

1. resolves the base image (base.py: an override such as DLBENCH_BASE_IMAGE, else the
   digest-pinned public one, else, where that cannot be pulled, a local one made with
   mmdebstrap and remembered for later builds);
2. hashes its inputs (context.py): the one Dockerfile, shared install script, lock file,
   the contract/ and workloads/ packages, the build arguments and the base image id. An
   image with the same tag whose `org.dlbench.inputs-sha256` label matches is reused as it is;
3. otherwise assembles a small build context in a temporary directory, laid out like
   the repository (so the Dockerfile also builds by hand from the repository root, see
   context.docker_build_command):
       docker/Dockerfile   docker/<framework>/requirements-<flavour>.txt
       docker/common/install-requirements.sh   contract/   workloads/   build-inputs/ (optional)
   and builds it with the classic builder, streaming progress lines.

build-inputs/ carries the transport settings of the pip step: wheels from a
wheelhouse that the lock names (with a matching sha256), an extra CA certificate,
index URLs. They are not part of the input hash: the lock's hashes fix every file
pip installs, wherever it came from, and none of them reaches the final image.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import DlbenchError
from orchestrator.fileio import sha256_file
from orchestrator.images.base import base_for_build
from orchestrator.images.context import (
    BUILD_INPUTS,
    build_args,
    compute_inputs_sha256,
    context_files,
    proxy_build_args,
    write_build_inputs,
)
from orchestrator.images.options import BuildOptions
from orchestrator.images.progress import Progress, first_line, say
from orchestrator.images.spec import FlavourSpec, ImageSpec, get_spec, image_tag
from orchestrator.paths import cache_dir

LABEL_INPUTS = "org.dlbench.inputs-sha256"
LABEL_BASE_ID = "org.dlbench.base-image-id"
LABEL_BASE = "org.dlbench.base-image"


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
    def from_image(cls, image, tag: str, built: bool = False) -> ImageInfo:
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
    for note in options.notes:
        say(progress, f"build option: {note}")
    base, base_image = base_for_build(client, fl.base, options.base_image, progress)
    lock_sha = sha256_file(fl.lock)
    buildargs = build_args(spec, fl, base, lock_sha)
    files = context_files(spec, fl)
    inputs = compute_inputs_sha256(files, buildargs, base_image.id)

    try:
        existing = client.images.get(tag)
    except docker.errors.ImageNotFound:
        existing = None
    if existing is not None and not rebuild:
        labels = (existing.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_INPUTS) == inputs:
            say(progress, f"{tag}: up to date ({existing.short_id})")
            return ImageInfo.from_image(existing, tag, built=False)
        say(progress, f"{tag}: inputs changed, rebuilding")

    with tempfile.TemporaryDirectory(prefix="dlbench-build-") as tmp:
        ctx = Path(tmp)
        for rel, src in files.items():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
        for note in write_build_inputs(fl, options, ctx / BUILD_INPUTS):
            say(progress, f"build input: {note}")
        say(progress, f"building {tag} from {base}")
        labels = {LABEL_INPUTS: inputs, LABEL_BASE: base, LABEL_BASE_ID: base_image.id}
        image_id = _run_build(client, ctx, spec, fl, tag, {**buildargs, **proxy_build_args()},
                              labels, options, progress)
    image = client.images.get(image_id or tag)
    say(progress, f"{tag}: built {image.short_id}, {image.attrs.get('Size', 0) / 1e6:.0f} MB")
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
                        say(progress, line)
        except docker.errors.APIError as exc:
            error = exc.explanation or str(exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            error = f"lost the Docker engine during the build ({type(exc).__name__}: {exc})"
    if error:
        lines = "\n".join(f"  | {line}" for line in tail)
        raise DlbenchError(f"building {tag} failed: {first_line(error)}{_hint_for(tail)} "
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
    inputs = compute_inputs_sha256(context_files(spec, fl),
                                   build_args(spec, fl, base, sha256_file(fl.lock)), base_id)
    return "current" if labels.get(LABEL_INPUTS) == inputs else "stale"
