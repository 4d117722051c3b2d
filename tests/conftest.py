"""Shared fixtures: the repository root and its venv's tools."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
from kafka_local import LocalKafka, require_libs

# torch._dynamo registers polyfills for builtins such as sys.intern when it is first imported.
# Ansible's module_utils, which test_kafka_role_logic imports at collection, replace sys.intern
# with a patch object that dynamo refuses (TypeError: substitute_in_graph expects a function).
# Importing dynamo first lets both live in one test process; nodes never load both.
with contextlib.suppress(ImportError):  # a venv without the train extra has no torch
    import torch._dynamo  # noqa: F401

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
