"""Where runs execute, found by name. `docker` (one container per run) is the product's
way; `local` (one virtualenv per framework, from the same lock files) is the fallback
for hosts without a Docker engine, GPU machines without Docker included.

A new backend: a module here with one `Backend` subclass (base.py says what it must
provide and declare), and one `register(...)` line at the end of this file. The
--backend choices and help, `auto`, --no-build, rerun and the backend names the plan
and run schemas accept all follow from the registry; nothing else names a backend.
Backends are imported only when used, so `dlbench plan` never loads the docker SDK.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.errors import DlbenchError
from orchestrator.results import directory

if TYPE_CHECKING:
    from orchestrator.execution.backends.base import Backend


@dataclass(frozen=True)
class Registration:
    name: str
    target: str | type[Backend]  # "package.module:Class", imported when first needed
    auto: str | None = None      # tried by `--backend auto` (in registry order): how its help says when


BACKENDS: dict[str, Registration] = {}


def register(name: str, target: str | type[Backend], auto: str | None = None) -> None:
    BACKENDS[name] = Registration(name, target, auto)


def unregister(name: str) -> None:
    BACKENDS.pop(name, None)


def names() -> list[str]:
    """The registered backends, in registry order."""
    return list(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    target = BACKENDS[name].target
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def one_of(words: list[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b or c'."""
    return " or ".join(filter(None, [", ".join(words[:-1]), *words[-1:]]))


def backend_help() -> str:
    """--backend's help: the choices, and what `auto` does."""
    auto = ", else ".join(entry.auto for entry in BACKENDS.values() if entry.auto)
    return f"auto (default; {auto}), {one_of(names())}"


def select_backend(name: str, say: Callable[[str], None] = print, build: bool = True) -> Backend:
    """A backend by name; `auto`: the first of the auto backends that can run here (Docker
    when an engine answers and an image can be built on it, else local), saying in one line
    why it fell back. build=False (--no-build) skips the can-it-build check, as environments
    already made need nothing built; a backend named outright makes that check in preflight."""
    if name != "auto" and name not in BACKENDS:
        raise DlbenchError(f"--backend/BACKEND: unknown backend '{name}' "
                           f"(use {one_of(['auto', *names()])})")
    if name != "auto":
        return backend_class(name).open()
    from orchestrator.execution.backends.base import Unavailable

    passed: list[str] = []
    for entry in BACKENDS.values():
        if entry.auto is None:
            continue
        try:
            backend = backend_class(entry.name).open()
            if build:
                check_can_build(backend)
        except Unavailable as exc:
            passed.append(exc.reason)
            continue
        if passed:
            say(f"{'; '.join(passed)}; running on the {backend.name} backend ({backend.summary}).")
        return backend
    raise DlbenchError(f"no backend can run here: {'; '.join(passed)}")


def check_can_build(backend: Backend) -> None:
    """Unavailable when the backend could not make its environments here (Docker: no base
    image to be had); a backend declares the check as `check_can_build`, if it has one."""
    check = getattr(backend, "check_can_build", None)
    if check is not None:
        check()


def use_existing_environments(backend: Backend) -> None:
    """--no-build: existing environments only, on a backend that would otherwise build them."""
    if not backend.supports_no_build:
        able = [name for name in BACKENDS if backend_class(name).supports_no_build]
        raise DlbenchError(f"--no-build applies to the {one_of(able)} backend only")
    backend.build = False


def runs_on_this_host(name: str) -> bool:
    """False for a backend whose runs go to other machines (a cluster scheduler's nodes): the
    plan checks their resources against those machines (sbatch), not this host."""
    from orchestrator.execution.backends.base import ScheduledBackend

    return name not in BACKENDS or not issubclass(backend_class(name), ScheduledBackend)


def rerun_backends() -> list[str]:
    """The backends that can run a bundle's runs again on the images it recorded."""
    return [name for name in BACKENDS if backend_class(name).reruns_recorded_images]


# The backend names plan.json and run.json may carry are exactly the registered ones.
directory.registered_backends = names

register("docker", "orchestrator.execution.backends.docker:DockerBackend", auto="Docker if reachable")
register("local", "orchestrator.execution.backends.local:LocalBackend", auto="local")
register("slurm", "orchestrator.execution.backends.slurm:SlurmBackend")
