"""Engine bootstrap: install and start when root on Debian, else say exactly what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from capturelab.errors import HostEnvironmentError
from capturelab.lab import engine
from capturelab.lab.engine import HostFacts


def test_missing_engine_not_root_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(engine, "engine_running", lambda: False)
    with pytest.raises(HostEnvironmentError) as err:
        engine.ensure_engine(tmp_path, HostFacts(is_root=False, is_debian_like=True))
    msg = str(err.value)
    assert "docker info" in msg
    assert "apt-get install -y --no-install-recommends docker.io" in msg


def test_missing_tools_not_debian(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engine, "missing_packages", lambda: ["qemu-system-x86", "debootstrap"])
    with pytest.raises(HostEnvironmentError, match="qemu-system-x86 debootstrap"):
        engine.ensure_host_tools(HostFacts(is_root=True, is_debian_like=False))


def test_root_on_debian_installs(monkeypatch: pytest.MonkeyPatch):
    calls: list[list[str]] = []
    missing = [["debootstrap"], []]
    monkeypatch.setattr(engine, "missing_packages", lambda: missing.pop(0) if missing else [])
    monkeypatch.setattr(engine, "run", lambda argv, **kw: calls.append(list(argv)) or "")
    engine.ensure_host_tools(HostFacts(is_root=True, is_debian_like=True))
    assert calls[0][:2] == ["apt-get", "update"]
    assert calls[1][-1] == "debootstrap"


def test_running_engine_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(engine, "engine_running", lambda: True)
    engine.ensure_engine(tmp_path, HostFacts(is_root=False, is_debian_like=False))
