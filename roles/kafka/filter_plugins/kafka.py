"""Filters for the kafka role: a deterministic KRaft cluster id, and reading .properties files."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any


def kafka_cluster_id(members: list[str], salt: str = "") -> str:
    """A KRaft cluster id (16 bytes, base64url without padding) derived from the member names.

    The same inventory always gives the same id, so re-running against an existing cluster is
    recognised, and a different inventory is refused rather than silently re-formatted.
    """
    if not members:
        raise ValueError("kafka_cluster_id: the gateway group has no hosts")
    seed = "\n".join(sorted(str(m) for m in members)) + "\n" + salt
    digest = hashlib.sha256(seed.encode()).digest()[:16]
    cluster_id = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    rehash = 0
    # An id starting with "-" reads as an option to kafka-storage (Kafka's own random ids avoid
    # it too): re-derive, deterministically, until it does not.
    while cluster_id.startswith("-"):
        rehash += 1
        digest = hashlib.sha256(f"{seed}\n{rehash}".encode()).digest()[:16]
        cluster_id = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return cluster_id


def kafka_scram_password(secret: str, principal: str) -> str:
    """A principal's SCRAM password, derived from the lab's one Kafka secret (kept in the vault).

    HMAC-SHA256(secret, "kafka-scram:" + principal), base64url: every tier that knows the
    secret and its own principal name can compute its password; nothing else is stored.
    """
    if len(secret) < 16:
        raise ValueError("kafka_scram_password: the secret must be at least 16 characters")
    mac = hmac.new(secret.encode(), f"kafka-scram:{principal}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def kafka_properties(text: str) -> dict[str, str]:
    """Parse a Java .properties text (key=value lines; # and ! comments)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip()
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "kafka_cluster_id": kafka_cluster_id,
            "kafka_properties": kafka_properties,
            "kafka_scram_password": kafka_scram_password,
        }
