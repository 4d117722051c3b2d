#!/usr/bin/python
"""Ansible module: reconcile Kafka topics with Kafka's own admin tools (idempotent).

Creates missing topics, grows partitions, converges topic configs; refuses to shrink
partitions or change the replication factor (those need a reassignment plan), naming the
topic. Retries while the broker is not answering, then fails clearly.
"""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kafka_cli import run_java

DOCUMENTATION = r"""
module: kafka_topics
short_description: Reconcile Kafka topics (partitions, replication, configs)
description:
  - Runs on a broker host with Kafka's jars; uses TopicCommand and ConfigCommand.
options:
  bootstrap: {description: bootstrap servers, type: str, required: true}
  classpath: {description: Kafka libs classpath, e.g. /opt/kafka/current/libs/*, type: str, required: true}
  topics: {description: list of {name, partitions, replication, configs}, type: list, elements: dict, required: true}
  retries: {description: attempts while the broker does not answer, type: int, default: 10}
  delay: {description: seconds between attempts, type: int, default: 6}
  command_config: {description: client properties file (TLS+SASL admin), type: str}
author: capturelab
"""

TOPIC_LINE = re.compile(
    r"^Topic:\s*(?P<name>\S+)\s+TopicId:\s*\S+\s+PartitionCount:\s*(?P<partitions>\d+)\s+"
    r"ReplicationFactor:\s*(?P<rf>\d+)\s+Configs:\s*(?P<configs>.*)$"
)


def _tool(module, p, main, args):
    return run_java(
        module,
        p["classpath"],
        main,
        args,
        retries=p["retries"],
        delay=p["delay"],
        command_config=p.get("command_config"),
    )


def describe_topics(module, p):
    out = _tool(
        module,
        p,
        "org.apache.kafka.tools.TopicCommand",
        ["--bootstrap-server", p["bootstrap"], "--describe", "--exclude-internal"],
    )
    topics = {}
    for line in out.splitlines():
        m = TOPIC_LINE.match(line.strip())
        if m:
            topics[m["name"]] = {"partitions": int(m["partitions"]), "replication": int(m["rf"])}
    return topics


def describe_configs(module, p):
    out = _tool(
        module,
        p,
        "kafka.admin.ConfigCommand",
        ["--bootstrap-server", p["bootstrap"], "--entity-type", "topics", "--describe"],
    )
    configs, current = {}, None
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("Dynamic configs for topic ") and line.endswith(" are:"):
            current = line[len("Dynamic configs for topic ") : -len(" are:")]
            configs[current] = {}
        elif current is not None and "=" in line:
            key, rest = line.split("=", 1)
            configs[current][key.strip()] = rest.split(" sensitive=", 1)[0]
    return configs


def plan(topics, existing, configs, module):
    """What to do for each declared topic; fails (changing nothing) on a refused change."""
    plans, problems = [], []
    for topic in topics:
        name = topic["name"]
        want_p, want_rf = int(topic["partitions"]), int(topic["replication"])
        want_cfg = {k: str(v) for k, v in (topic.get("configs") or {}).items()}
        if name not in existing:
            plans.append(("create", name, want_p, want_rf, want_cfg))
            continue
        have = existing[name]
        if want_p < have["partitions"]:
            problems.append(
                f"topic {name}: partitions {have['partitions']} -> {want_p} refused "
                "(Kafka cannot shrink partitions; keep the count or create a new topic)"
            )
        elif want_p > have["partitions"]:
            plans.append(("grow", name, want_p, want_rf, want_cfg))
        if want_rf != have["replication"]:
            problems.append(
                f"topic {name}: replication {have['replication']} -> {want_rf} refused "
                "(needs a partition reassignment; do it with kafka-reassign-partitions)"
            )
        have_cfg = configs.get(name, {})
        diff = {k: v for k, v in want_cfg.items() if have_cfg.get(k) != v}
        if diff:
            plans.append(("config", name, want_p, want_rf, diff))
    if problems:
        module.fail_json(msg="; ".join(problems), changed=False)
    return plans


def main():
    module = AnsibleModule(
        argument_spec={
            "bootstrap": {"type": "str", "required": True},
            "classpath": {"type": "str", "required": True},
            "topics": {"type": "list", "elements": "dict", "required": True},
            "retries": {"type": "int", "default": 10},
            "delay": {"type": "int", "default": 6},
            "command_config": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    plans = plan(p["topics"], describe_topics(module, p), describe_configs(module, p), module)
    created, grown, reconfigured = [], {}, {}
    for action, name, want_p, want_rf, cfg in plans:
        if action == "create":
            created.append(name)
        elif action == "grow":
            grown[name] = want_p
        else:
            reconfigured[name] = cfg
        if module.check_mode:
            continue
        if action == "create":
            args = [
                "--bootstrap-server",
                p["bootstrap"],
                "--create",
                "--topic",
                name,
                "--partitions",
                str(want_p),
                "--replication-factor",
                str(want_rf),
            ]
            for k, v in sorted(cfg.items()):
                args += ["--config", f"{k}={v}"]
            _tool(module, p, "org.apache.kafka.tools.TopicCommand", args)
        elif action == "grow":
            _tool(
                module,
                p,
                "org.apache.kafka.tools.TopicCommand",
                [
                    "--bootstrap-server",
                    p["bootstrap"],
                    "--alter",
                    "--topic",
                    name,
                    "--partitions",
                    str(want_p),
                ],
            )
        else:
            _tool(
                module,
                p,
                "kafka.admin.ConfigCommand",
                [
                    "--bootstrap-server",
                    p["bootstrap"],
                    "--entity-type",
                    "topics",
                    "--entity-name",
                    name,
                    "--alter",
                    "--add-config",
                    ",".join(f"{k}={v}" for k, v in sorted(cfg.items())),
                ],
            )
    module.exit_json(
        changed=bool(plans),
        created=created,
        grown=grown,
        reconfigured=reconfigured,
    )


if __name__ == "__main__":
    main()
