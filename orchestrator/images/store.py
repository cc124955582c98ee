"""Images handed to cluster nodes without a registry: the host saves each image once, by
image ID, into a directory the nodes share (`docker save` of the ID: the archive holds the
image's config and layers, whose digests make up that ID); a node that lacks the image
checks the archive's sha256 against the one recorded at saving, loads it, and checks that
the engine now holds exactly that image ID before anything runs on it.

store/sha256-<id>.tar        the archive
store/sha256-<id>.json       {"id", "tag", "sha256", "bytes"}: written after the archive
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from contract.jsonio import write_json_atomic
from orchestrator.errors import DlbenchError

CHUNK = 4 * 2**20


def archive_paths(store: Path, image_id: str) -> tuple[Path, Path]:
    stem = image_id.replace(":", "-")
    return store / f"{stem}.tar", store / f"{stem}.json"


def save(client, image_id: str, tag: str | None, store: Path,
         progress: Callable[[str], None] = lambda line: None) -> dict:
    """The archive of image_id in the store (saved now unless saved before): its record."""
    archive, meta = archive_paths(store, image_id)
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        if record.get("id") == image_id and archive.stat().st_size == record.get("bytes"):
            return {**record, "path": str(archive)}
    except (OSError, ValueError):
        pass  # not saved yet (or half): save it
    store.mkdir(parents=True, exist_ok=True)
    progress(f"saving {tag or image_id} to {archive} for the nodes")
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=store, prefix=".saving-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in client.api.get_image(image_id, chunk_size=CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        os.chmod(tmp, 0o644)  # mkstemp's 0600: the nodes' jobs may run as another user
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record = {"id": image_id, "tag": tag, "sha256": digest.hexdigest(), "bytes": size}
    write_json_atomic(str(meta), record)
    return {**record, "path": str(archive)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def has_image(client, image_id: str) -> bool:
    """The engine holds this very image (by ID, whatever its tags)."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(image_id)
    except ImageNotFound:
        return False
    return True


def ensure_loaded(client, saved: dict) -> dict:
    """Make the node's engine hold the saved image (loading the archive when it lacks it);
    what happened, for the run's record. One-line DlbenchError when the archive is not the
    one saved or does not hold that image."""
    from docker.errors import ImageNotFound

    image_id = saved["id"]
    if has_image(client, image_id):
        return {"id": image_id, "loaded": False}
    archive = Path(saved["path"])
    try:
        actual = file_sha256(archive)
    except OSError as exc:
        raise DlbenchError(f"{archive}: image archive not readable on this node ({exc.strerror}); "
                           "the image store must be on a filesystem every node shares") from None
    if actual != saved["sha256"]:
        raise DlbenchError(f"{archive}: sha256 {actual[:16]}... is not the {saved['sha256'][:16]}... "
                           "recorded when it was saved; remove it and run again to save it afresh")
    with open(archive, "rb") as fh:
        client.images.load(fh)
    try:
        client.images.get(image_id)
    except ImageNotFound:
        raise DlbenchError(f"{archive}: loaded, but the engine holds no image {image_id[:19]} "
                           "afterwards; remove the archive and run again to save it afresh") from None
    return {"id": image_id, "loaded": True, "archive": str(archive), "sha256": actual}
