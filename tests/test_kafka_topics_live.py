"""The kafka role's topic reconciliation (library/kafka_topics.py) against a live broker.

The module runs from the controller here (connection local) against the loopback broker, with
the same jars the role installs: create, re-run with no change, converge a changed config, grow
partitions, and refuse to shrink them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient, ConfigResource
from kafka_local import LocalKafka

REPO = Path(__file__).resolve().parents[1]


def reconcile(kafka: LocalKafka, tmp_path: Path, env: dict[str, str], topics: list[dict]):
    playbook = tmp_path / "topics.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "reconcile",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "tasks": [
                        {
                            "name": "topics",
                            "kafka_topics": {
                                "bootstrap": kafka.bootstrap,
                                "classpath": f"{kafka.libs}/*",
                                "topics": topics,
                                "retries": 2,
                                "delay": 2,
                            },
                            "register": "out",
                        },
                        {"name": "result", "ansible.builtin.debug": {"var": "out"}},
                    ],
                }
            ]
        )
    )
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook)],
        env=dict(
            env,
            ANSIBLE_LIBRARY=str(REPO / "roles/kafka/library"),
            ANSIBLE_MODULE_UTILS=str(REPO / "roles/kafka/module_utils"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc


def topic_config(kafka: LocalKafka, name: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(30)
    return {k: v.value for k, v in entries.items()}


def partitions(kafka: LocalKafka, name: str) -> int:
    md = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(name, timeout=30)
    return len(md.topics[name].partitions)


def test_topics_converge_on_a_live_broker(kafka: LocalKafka, tmp_path: Path, tool_env):
    capture = {
        "name": "live.events",
        "partitions": 3,
        "replication": 1,
        "configs": {"retention.ms": "432000000", "cleanup.policy": "delete"},
    }
    first = reconcile(kafka, tmp_path, tool_env, [capture])
    assert first.returncode == 0, first.stdout[-3000:]
    assert "changed=1" in first.stdout
    assert partitions(kafka, "live.events") == 3
    assert topic_config(kafka, "live.events")["retention.ms"] == "432000000"

    again = reconcile(kafka, tmp_path, tool_env, [capture])
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

    changed = dict(
        capture, partitions=4, configs={"retention.ms": "86400000", "cleanup.policy": "delete"}
    )
    third = reconcile(kafka, tmp_path, tool_env, [changed])
    assert third.returncode == 0 and "changed=1" in third.stdout, third.stdout[-3000:]
    assert partitions(kafka, "live.events") == 4
    assert topic_config(kafka, "live.events")["retention.ms"] == "86400000"

    shrink = reconcile(kafka, tmp_path, tool_env, [dict(changed, partitions=2)])
    assert shrink.returncode != 0
    assert "live.events" in shrink.stdout and "shrink" in shrink.stdout.lower(), shrink.stdout[
        -3000:
    ]
    assert partitions(kafka, "live.events") == 4  # untouched
