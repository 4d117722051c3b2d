"""The kafka role's Python parts: the derived cluster id and the topic reconciliation plan."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROLE = Path(__file__).resolve().parents[1] / "roles" / "kafka"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


filters = _load(ROLE / "filter_plugins" / "kafka.py")
# Ansible ships a role's module_utils to the host as ansible.module_utils.<name>; do the same here.
sys.modules["ansible.module_utils.kafka_cli"] = _load(ROLE / "module_utils" / "kafka_cli.py")
topics_module = _load(ROLE / "library" / "kafka_topics.py")


def test_cluster_id_is_deterministic_kraft_uuid():
    a = filters.kafka_cluster_id(["gw-2", "gw-1", "gw-3"], "salt")
    assert a == filters.kafka_cluster_id(["gw-1", "gw-2", "gw-3"], "salt"), "order does not matter"
    assert a != filters.kafka_cluster_id(["gw-1", "gw-2"], "salt"), "another inventory, another id"
    assert a != filters.kafka_cluster_id(["gw-1", "gw-2", "gw-3"], "other")
    assert len(a) == 22
    assert len(base64.urlsafe_b64decode(a + "==")) == 16


def test_cluster_id_needs_members():
    with pytest.raises(ValueError, match="no hosts"):
        filters.kafka_cluster_id([], "")


def test_properties_parser():
    text = "#Sat Nov 22\ncluster.id=abc\n! comment\nnode.id = 3\nversion=1\n"
    assert filters.kafka_properties(text) == {"cluster.id": "abc", "node.id": "3", "version": "1"}


class FakeModule:
    def fail_json(self, **kw: Any) -> None:
        raise RuntimeError(kw["msg"])


def _want(**kw: Any) -> dict[str, Any]:
    return {
        "name": "capture.events",
        "partitions": 6,
        "replication": 1,
        "configs": {"retention.ms": "432000000", "cleanup.policy": "delete"},
    } | kw


def test_plan_creates_missing_topics():
    plans = topics_module.plan([_want()], {}, {}, FakeModule())
    assert plans == [
        (
            "create",
            "capture.events",
            6,
            1,
            {"retention.ms": "432000000", "cleanup.policy": "delete"},
        )
    ]


def test_plan_is_empty_when_converged():
    existing = {"capture.events": {"partitions": 6, "replication": 1}}
    configs = {"capture.events": {"retention.ms": "432000000", "cleanup.policy": "delete"}}
    assert topics_module.plan([_want()], existing, configs, FakeModule()) == []


def test_plan_grows_and_reconfigures():
    existing = {"capture.events": {"partitions": 3, "replication": 1}}
    configs = {"capture.events": {"retention.ms": "86400000", "cleanup.policy": "delete"}}
    plans = topics_module.plan([_want()], existing, configs, FakeModule())
    assert ("grow", "capture.events", 6, 1, _want()["configs"]) in plans
    assert ("config", "capture.events", 6, 1, {"retention.ms": "432000000"}) in plans


def test_plan_refuses_shrink_and_replication_change():
    existing = {"capture.events": {"partitions": 12, "replication": 3}}
    with pytest.raises(RuntimeError) as err:
        topics_module.plan([_want()], existing, {}, FakeModule())
    assert "partitions 12 -> 6 refused" in str(err.value)
    assert "replication 3 -> 1 refused" in str(err.value)


def test_cluster_id_never_starts_with_a_dash():
    """kafka-storage would read "-..." as an option; about 1 inventory in 64 would hit it."""
    ids = [filters.kafka_cluster_id([f"gw-{i}", f"gw-{i}b"]) for i in range(1000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == 1000
    assert filters.kafka_cluster_id(["gw-1"]) == filters.kafka_cluster_id(["gw-1"])
