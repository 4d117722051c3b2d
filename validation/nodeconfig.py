"""Reading what a node was provisioned with (its capturelab config files), through Testinfra.

The suites target what the nodes really use: the bootstrap address in the collector's and the
sink's own configuration, never an address typed into a test.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from capturelab.errors import HostEnvironmentError


def read_yaml(lab: Any, node: str, path: str) -> dict[str, Any]:
    out = lab.run(node, f"cat {path}")
    if out.rc != 0:
        raise HostEnvironmentError(f"{node}: cannot read {path}: {out.stderr.strip()}")
    data = yaml.safe_load(out.stdout)
    if not isinstance(data, dict):
        raise HostEnvironmentError(f"{node}: {path} is not a YAML mapping")
    return data


def run_json(lab: Any, node: str, command: str, timeout_s: int = 300) -> Any:
    out = lab.run(node, command, timeout_s)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        raise HostEnvironmentError(
            f"{node}: `{command}` exited {out.rc} without JSON: "
            f"{(out.stderr or out.stdout).strip()[-400:]}"
        ) from None


def first_bootstrap(config: dict[str, Any], node: str, path: str) -> tuple[str, int]:
    raw = str(config.get("bootstrap_servers", "")).split(",")[0].strip()
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise HostEnvironmentError(f"{node}: {path} bootstrap_servers {raw!r} is not host:port")
    return host, int(port)


def sink_window(
    lab: Any, storage: str, root: str, collector: str, seqs: tuple[int, int]
) -> dict[str, Any]:
    """``capturelab sink verify`` of one collector's sequence window on the storage node."""
    doc = run_json(
        lab,
        storage,
        f"{lab.capturelab(storage)} sink verify --root {root} --json --collector {collector} "
        f"--seq-from {seqs[0]} --seq-to {seqs[1]}",
    )
    window: dict[str, Any] = doc["window"]
    return window
