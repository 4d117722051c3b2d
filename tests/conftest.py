"""Shared fixtures: the repository root and its venv's tools."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from kafka_local import LocalKafka, require_libs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    """Environment for running the venv's ansible/capturelab from the repo."""
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Kafka broker on loopback for the module's tests (stopped afterwards)."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), require_libs())
    broker.start()
    yield broker
    broker.stop()
