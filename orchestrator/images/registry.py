"""Images handed to cluster nodes through a registry (`dlbench run --registry HOST[:PORT]`,
or a suite's `slurm.registry`): the host pushes each image once as HOST/<repository>:<tag>
and records the manifest digest the registry answered; a job pulls exactly that
(`HOST/<repository>@sha256:...`, never the tag, which may have moved) and checks that the
engine then holds the image ID the host ran, before anything runs on it.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from orchestrator.errors import DlbenchError
from orchestrator.images.store import has_image

# host, host:port or an IPv4 address with a port; optionally a path prefix (host/team)
REGISTRY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)*")


def reference(registry: str, tag: str) -> tuple[str, str]:
    """(repository in the registry, tag) for a local tag such as dlbench/chainer:7.8.1-cpu."""
    name, _, version = tag.rpartition(":")
    return f"{registry.rstrip('/')}/{name}", version


def push(client, image_id: str, tag: str | None, registry: str,
         progress: Callable[[str], None] = lambda line: None) -> dict:
    """Push image_id under its tag to the registry; what a node pulls it by."""
    from docker.errors import APIError

    if not tag or ":" not in tag:
        raise DlbenchError(f"{image_id[:19]}: an image without a tag cannot be pushed; build it with "
                           "dlbench images build")
    repository, version = reference(registry, tag)
    digest = None
    try:
        client.images.get(image_id).tag(repository, version)
        progress(f"pushing {tag} to {repository}:{version} for the nodes")
        for line in client.api.push(repository, version, stream=True, decode=True):
            if line.get("error"):
                raise DlbenchError(f"{registry}: push of {tag} refused ({line['error'].strip()[:200]}); "
                                   "check the registry's address, that it answers, and docker login")
            digest = (line.get("aux") or {}).get("Digest") or digest
    except APIError as exc:
        raise DlbenchError(f"{registry}: cannot push {tag} ({exc.explanation or exc}); check the "
                           "registry's address and that it answers") from None
    if not digest:
        raise DlbenchError(f"{registry}: the registry named no digest for {tag}; dlbench pulls by "
                           "digest only")
    return {"id": image_id, "registry": registry, "reference": f"{repository}@{digest}"}


def ensure_pulled(client, pushed: dict) -> dict:
    """Make the node's engine hold the pushed image (pulling it by digest when it lacks it);
    what happened, for the run's record. One-line DlbenchError otherwise."""
    from docker.errors import APIError

    image_id = pushed["id"]
    if has_image(client, image_id):
        return {"id": image_id, "loaded": False}
    ref = pushed["reference"]
    try:
        client.api.pull(ref)
    except APIError as exc:
        raise DlbenchError(f"{ref}: cannot pull it on this node ({exc.explanation or exc}); the "
                           "nodes must reach the registry") from None
    if not has_image(client, image_id):
        raise DlbenchError(f"{ref}: pulled, but it is not image {image_id[:19]} that the host ran; "
                           "someone pushed another image under that digest's repository")
    return {"id": image_id, "loaded": True, "pulled": ref}
