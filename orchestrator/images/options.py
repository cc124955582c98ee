"""How to build an image (BuildOptions): the base image override, the pip step's
transport (wheelhouse, extra CA, index URLs), the build's network and cache. None of
these changes what ends up in an image, so none of them is part of its input hash.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.errors import DlbenchError
from orchestrator.images.locks import host_pip_settings


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

    ENV: ClassVar[dict[str, str]] = {
        "base_image": "DLBENCH_BASE_IMAGE", "extra_ca": "DLBENCH_EXTRA_CA",
        "wheelhouse": "DLBENCH_WHEELHOUSE", "pip_index_url": "DLBENCH_PIP_INDEX_URL",
        "pip_extra_index_url": "DLBENCH_PIP_EXTRA_INDEX_URL",
        "network_mode": "DLBENCH_BUILD_NETWORK"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, host_pip: bool = True,
                 **overrides: Any) -> BuildOptions:
        """DLBENCH_* variables first. With host_pip, a wheelhouse and a CA the host's own
        pip is configured with (PIP_FIND_LINKS / PIP_CERT or `pip config`) fill the gaps:
        the lock's hashes decide what is installed, so borrowing them is safe.
        DLBENCH_BUILD_HOST_PIP=0 turns that off."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
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
