"""Where the lab keeps things: recipes in the repo, runtime state in ``.lab/``, caches outside."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from capturelab.errors import InputError


@dataclass(frozen=True)
class LabPaths:
    repo: Path

    @classmethod
    def find(cls, start: Path | None = None) -> LabPaths:
        """The repository root: the nearest folder upwards holding ``images/rootfs.py``."""
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "images" / "rootfs.py").is_file():
                return cls(candidate)
        raise InputError(
            f"no capturelab repository found from {here}: expected images/rootfs.py in it or "
            "a parent folder (run the lab commands from the repository)"
        )

    @property
    def images(self) -> Path:
        return self.repo / "images"

    @property
    def state(self) -> Path:
        """Runtime state of the running lab (keys, VM disks, logs); removed by lab-down."""
        return self.repo / ".lab"

    @property
    def cache(self) -> Path:
        """Built artefacts reused across labs (VM base disks); survives lab-down."""
        env = os.environ.get("CAPTURELAB_CACHE")
        if env:
            return Path(env)
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "capturelab"

    @property
    def ssh_key(self) -> Path:
        return self.state / "ssh" / "id_ed25519"
