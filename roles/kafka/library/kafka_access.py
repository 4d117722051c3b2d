#!/usr/bin/python
"""Ansible module: SCRAM principals and ACLs on a KRaft cluster with StandardAuthorizer (idempotent).

Creates the SCRAM credentials of principals that have none yet (passwords go through a 0600
temp file, never the command line) and adds the ACLs that are missing. It does not remove
ACLs it was not asked for (an operator may have added them); rotating a password is a
runbook step (docs/runbook.md), not a side effect of a converge.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kafka_cli import run_java

DOCUMENTATION = r"""
module: kafka_access
short_description: Kafka SCRAM users and ACLs
options:
  bootstrap: {description: bootstrap servers (the TLS+SASL listener), type: str, required: true}
  classpath: {description: Kafka libs classpath, type: str, required: true}
  command_config: {description: admin client properties file, type: str, required: true}
  users: {description: list of {name, password}, type: list, elements: dict, default: []}
  acls: {description: list of {principal, resource_type (topic|group|cluster), name, operations}, type: list,
         elements: dict, default: []}
  mechanism: {description: SCRAM mechanism, type: str, default: SCRAM-SHA-512}
  retries: {description: attempts while the cluster does not answer, type: int, default: 10}
  delay: {description: seconds between attempts, type: int, default: 6}
author: capturelab
"""

USER_LINE = re.compile(r"user-principal '(?P<name>[^']+)' are (?P<mechs>.*)$")
RESOURCE_LINE = re.compile(
    r"resourceType=(?P<type>\w+), name=(?P<name>[^,]+), patternType=(?P<pattern>\w+)"
)
ENTRY_LINE = re.compile(
    r"principal=(?P<principal>[^,]+), host=(?P<host>[^,]+), operation=(?P<op>\w+), permissionType=(?P<perm>\w+)"
)
RESOURCE_FLAG = {"topic": "--topic", "group": "--group", "cluster": "--cluster"}


def parse_users(output):
    users = {}
    for line in output.splitlines():
        m = USER_LINE.search(line)
        if m:
            users[m["name"]] = m["mechs"]
    return users


def parse_acls(output):
    """{(resource_type, name, principal, operation)} of the ALLOW entries on LITERAL patterns."""
    acls, resource = set(), None
    for line in output.splitlines():
        r = RESOURCE_LINE.search(line)
        if r:
            resource = (r["type"].lower(), r["name"]) if r["pattern"] == "LITERAL" else None
            continue
        e = ENTRY_LINE.search(line)
        if e and resource and e["perm"] == "ALLOW" and e["host"] == "*":
            acls.add((resource[0], resource[1], e["principal"], e["op"].upper()))
    return acls


def missing_acls(wanted, existing):
    """[(principal, resource_type, name, [operations])] still to add."""
    todo = []
    for acl in wanted:
        rtype, name = acl["resource_type"].lower(), acl.get("name") or "kafka-cluster"
        ops = [
            op.upper()
            for op in acl["operations"]
            if (rtype, name, acl["principal"], op.upper()) not in existing
        ]
        if ops:
            todo.append((acl["principal"], rtype, name, ops))
    return todo


def main():
    module = AnsibleModule(
        argument_spec={
            "bootstrap": {"type": "str", "required": True},
            "classpath": {"type": "str", "required": True},
            "command_config": {"type": "str", "required": True},
            "users": {"type": "list", "elements": "dict", "default": [], "no_log": True},
            "acls": {"type": "list", "elements": "dict", "default": []},
            "mechanism": {"type": "str", "default": "SCRAM-SHA-512"},
            "retries": {"type": "int", "default": 10},
            "delay": {"type": "int", "default": 6},
        },
        supports_check_mode=True,
    )
    p = module.params
    for acl in p["acls"]:
        if acl.get("resource_type", "").lower() not in RESOURCE_FLAG:
            module.fail_json(
                msg=f"acls: resource_type {acl.get('resource_type')!r} is not topic, group or cluster"
            )

    def tool(main_class, args, secret=False):
        return run_java(
            module,
            p["classpath"],
            main_class,
            ["--bootstrap-server", p["bootstrap"], *args],
            retries=p["retries"],
            delay=p["delay"],
            command_config=p["command_config"],
            secret_in_args=secret,
        )

    existing_users = parse_users(
        tool("kafka.admin.ConfigCommand", ["--describe", "--entity-type", "users"])
    )
    new_users = [
        u["name"] for u in p["users"] if p["mechanism"] not in existing_users.get(u["name"], "")
    ]
    existing_acls = parse_acls(tool("org.apache.kafka.tools.AclCommand", ["--list"]))
    todo = missing_acls(p["acls"], existing_acls)

    if not module.check_mode:
        for user in p["users"]:
            if user["name"] not in new_users:
                continue
            fd, path = tempfile.mkstemp(prefix="scram-", suffix=".properties")
            try:
                with os.fdopen(fd, "w") as handle:
                    # File values are taken literally (no [..] list syntax as on the command line).
                    handle.write(f"{p['mechanism']}=password={user['password']}\n")
                tool(
                    "kafka.admin.ConfigCommand",
                    [
                        "--alter",
                        "--add-config-file",
                        path,
                        "--entity-type",
                        "users",
                        "--entity-name",
                        user["name"],
                    ],
                )
            finally:
                Path(path).unlink()
        for principal, rtype, name, ops in todo:
            args = ["--add", "--allow-principal", principal]
            for op in ops:
                args += ["--operation", op]
            args += [RESOURCE_FLAG[rtype]] + ([] if rtype == "cluster" else [name])
            tool("org.apache.kafka.tools.AclCommand", args)

    module.exit_json(
        changed=bool(new_users or todo),
        created_users=new_users,
        added_acls=[
            {"principal": a, "resource_type": t, "name": n, "operations": o} for a, t, n, o in todo
        ],
    )


if __name__ == "__main__":
    main()
