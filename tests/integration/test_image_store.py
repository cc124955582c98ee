"""Images reach cluster nodes without a registry (orchestrator.images.store), on the real
engine: saved once by ID, loaded where missing, refused when the archive is not the one
saved. A tiny image of one file keeps it quick."""
from __future__ import annotations

import json
import os

import docker.errors
import pytest

from orchestrator.errors import DlbenchError
from orchestrator.images import registry as reg
from orchestrator.images import store


@pytest.fixture()
def tiny_image(docker_client, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "payload.txt").write_text(f"dlbench image store test {os.getpid()} {tmp_path.name}\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY payload.txt /payload.txt\n")
    image, _ = docker_client.images.build(path=str(context), tag="dlbench-test/store:tiny", rm=True)
    yield image
    try:
        docker_client.images.remove(image.id, force=True)
    except docker.errors.ImageNotFound:
        pass


def test_saved_once_by_id_and_loaded_where_missing(docker_client, tiny_image, tmp_path):
    lines: list[str] = []
    saved = store.save(docker_client, tiny_image.id, "dlbench-test/store:tiny", tmp_path / "store", lines.append)
    archive, meta = store.archive_paths(tmp_path / "store", tiny_image.id)
    assert saved["path"] == str(archive) and json.loads(meta.read_text())["sha256"] == saved["sha256"]
    assert oct(archive.stat().st_mode & 0o777) == "0o644"  # a node's job may run as another user
    assert len(lines) == 1
    again = store.save(docker_client, tiny_image.id, "dlbench-test/store:tiny", tmp_path / "store", lines.append)
    assert again == saved and len(lines) == 1  # saved once: not written again

    assert store.ensure_loaded(docker_client, saved) == {"id": tiny_image.id, "loaded": False}
    docker_client.images.remove(tiny_image.id, force=True)  # a node that lacks it
    loaded = store.ensure_loaded(docker_client, saved)
    assert loaded["loaded"] is True and loaded["sha256"] == saved["sha256"]
    assert docker_client.images.get(tiny_image.id).id == tiny_image.id  # the very image, by ID


def test_an_archive_that_is_not_the_one_saved_is_refused_before_loading(docker_client, tiny_image, tmp_path):
    saved = store.save(docker_client, tiny_image.id, None, tmp_path / "store")
    docker_client.images.remove(tiny_image.id, force=True)
    with open(saved["path"], "r+b") as fh:  # one byte changed
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(DlbenchError, match="is not the .* recorded when it was saved"):
        store.ensure_loaded(docker_client, saved)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tiny_image.id)  # nothing was loaded


def test_an_archive_of_another_image_is_refused_after_loading(docker_client, tiny_image, tmp_path):
    saved = store.save(docker_client, tiny_image.id, None, tmp_path / "store")
    claimed = {**saved, "id": "sha256:" + "0" * 64}  # the record names an image the archive is not
    with pytest.raises(DlbenchError, match="holds no image sha256:000000000000"):
        store.ensure_loaded(docker_client, claimed)


def test_an_archive_a_node_cannot_read_says_where_it_should_be(docker_client, tiny_image, tmp_path):
    saved = store.save(docker_client, tiny_image.id, None, tmp_path / "store")
    docker_client.images.remove(tiny_image.id, force=True)
    with pytest.raises(DlbenchError, match="filesystem every node shares"):
        store.ensure_loaded(docker_client, {**saved, "path": str(tmp_path / "elsewhere.tar")})


# -- through a registry (orchestrator.images.registry), a real one -----------------------

def test_pushed_once_and_pulled_by_digest_where_missing(docker_client, tiny_image, registry):
    pushed = reg.push(docker_client, tiny_image.id, "dlbench-test/store:tiny", registry)
    assert pushed["reference"].startswith(f"{registry}/dlbench-test/store@sha256:")
    assert reg.ensure_pulled(docker_client, pushed) == {"id": tiny_image.id, "loaded": False}
    docker_client.images.remove(tiny_image.id, force=True)  # a node that lacks it
    pulled = reg.ensure_pulled(docker_client, pushed)
    assert pulled == {"id": tiny_image.id, "loaded": True, "pulled": pushed["reference"]}
    assert docker_client.images.get(tiny_image.id).id == tiny_image.id


def test_a_digest_of_another_image_is_refused_after_pulling(docker_client, tiny_image, registry):
    pushed = reg.push(docker_client, tiny_image.id, "dlbench-test/store:tiny", registry)
    claimed = {**pushed, "id": "sha256:" + "0" * 64}
    with pytest.raises(DlbenchError, match="it is not image sha256:000000000000"):
        reg.ensure_pulled(docker_client, claimed)


def test_a_registry_that_does_not_answer_is_one_line(docker_client, tiny_image):
    with pytest.raises(DlbenchError, match="127.0.0.1:9: .*push"):
        reg.push(docker_client, tiny_image.id, "dlbench-test/store:tiny", "127.0.0.1:9")
