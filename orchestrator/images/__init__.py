"""Framework images: the pinned matrix (docker/images.yaml), builds and checks.

One module per job, each importing only those above it in this list:

    spec.py      docker/images.yaml: ImageSpec, FlavourSpec, load_images, get_spec, image_tag
    locks.py     the hash-locked requirement files, wheel selection, the host pip's settings
    options.py   BuildOptions: how to build (base override, the pip step's transport)
    progress.py  the progress callback and one-line engine errors
    context.py   what goes into a build: context files, build args, input hash,
                 build-inputs/, and the `docker build` command line for a build by hand
    base.py      the base image: found, pulled, or made locally with mmdebstrap
    build.py     ensure_image / require_image / image_status through the docker SDK
    gpu_compat.py  whether a cuda image runs on the host's GPUs (driver branch, architectures)

This package re-exports what callers use; it holds no code of its own.
"""
from __future__ import annotations

from orchestrator.images.base import (
    BASE_PACKAGES,
    DEFAULT_BASE_TAG,
    MAKE_BASE_HINT,
    default_base_tarball,
    make_base_image,
    resolve_base,
)
from orchestrator.images.build import (
    LABEL_BASE,
    LABEL_BASE_ID,
    LABEL_INPUTS,
    ImageInfo,
    ensure_image,
    image_status,
    require_image,
)
from orchestrator.images.context import (
    HASH_SCHEME,
    INSTALL_SCRIPT,
    by_hand_notes,
    compute_inputs_sha256,
    docker_build_command,
)
from orchestrator.images.gpu_compat import environment_problem
from orchestrator.images.locks import (
    BUILD_TOOLS,
    LockedRequirement,
    build_tools_requirements,
    host_pip_settings,
    normalize_name,
    parse_lock,
    select_wheels,
)
from orchestrator.images.options import BuildOptions
from orchestrator.images.progress import Progress
from orchestrator.images.spec import (
    DOCKERFILE,
    FLAVOURS,
    IMAGES_FILE,
    SCHEMA_VERSION,
    FlavourSpec,
    ImageSpec,
    compile_cache_dir,
    get_spec,
    image_tag,
    load_images,
)

__all__ = [
    "BASE_PACKAGES", "BUILD_TOOLS", "DEFAULT_BASE_TAG", "DOCKERFILE", "FLAVOURS", "HASH_SCHEME",
    "IMAGES_FILE", "INSTALL_SCRIPT", "LABEL_BASE", "LABEL_BASE_ID", "LABEL_INPUTS", "MAKE_BASE_HINT",
    "SCHEMA_VERSION",
    "BuildOptions", "FlavourSpec", "ImageInfo", "ImageSpec", "LockedRequirement", "Progress",
    "build_tools_requirements", "by_hand_notes", "compile_cache_dir", "compute_inputs_sha256",
    "default_base_tarball", "docker_build_command", "ensure_image", "environment_problem", "get_spec",
    "host_pip_settings", "image_status", "image_tag", "load_images", "make_base_image", "normalize_name",
    "parse_lock", "require_image", "resolve_base", "select_wheels",
]
