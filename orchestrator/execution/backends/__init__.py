"""Where runs execute. `docker` (one container per run) is the product's way;
`local` (one virtualenv per framework, from the same lock files) is the fallback
for hosts without a Docker engine, GPU machines without Docker included.

A new backend: a module here with a `Backend` subclass, and a line in `BACKENDS`.
"""
from __future__ import annotations

from orchestrator.errors import DlbenchError
from orchestrator.execution.backends.base import Backend

BACKEND_NAMES = ("auto", "docker", "local")


def select_backend(name: str, say=print) -> Backend:
    """`auto`: Docker when an engine answers, else local (said in one line)."""
    if name not in BACKEND_NAMES:
        raise DlbenchError(f"--backend/BACKEND: unknown backend '{name}' (use auto, docker or local)")
    if name in ("auto", "docker"):
        from orchestrator.execution.backends.docker import DockerBackend, connect

        client, problem = connect()
        if client is not None:
            return DockerBackend(client)
        if name == "docker":
            raise DlbenchError(f"BACKEND=docker but no Docker engine is reachable ({problem}); "
                               "start dockerd or set DOCKER_HOST")
        say(f"No Docker engine reachable ({problem}); running on the local backend "
            "(one virtualenv per framework).")
    from orchestrator.execution.backends.local import LocalBackend

    return LocalBackend()
