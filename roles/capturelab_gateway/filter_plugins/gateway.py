"""The bootstrap-servers filter: one rule for every client role (collector, sink)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def gateway_address(host: str, hostvars: Mapping[str, Any]) -> str:
    """The address a broker advertises (the kafka role's kafka_advertised_host).

    Its default IPv4 from facts gathered earlier in the same run; a lab host without facts falls
    back to its ``lab_ipv4``, then to its inventory name.
    """
    facts = hostvars.get(host, {})
    ipv4 = facts.get("ansible_default_ipv4") or {}
    return str(ipv4.get("address") or facts.get("lab_ipv4") or host)


def capturelab_bootstrap_servers(
    hosts: Iterable[str], hostvars: Mapping[str, Any], port: int | str
) -> str:
    """``address:port`` of each gateway host, comma-separated, in inventory order; empty if none."""
    return ",".join(f"{gateway_address(h, hostvars)}:{int(port)}" for h in hosts)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"capturelab_bootstrap_servers": capturelab_bootstrap_servers}
