"""How batches travel to Kafka: the producer settings every capturelab producer uses.

One place, so the collector, ``capturelab synth`` and ``capturelab bench gateway`` send exactly
the same way. Durability first (see the design's invariants): ``acks=all`` and idempotence, so a
retry never duplicates and nothing acknowledged is lost while ``min.insync.replicas`` are up.
Values are already zstd-compressed frames, so the producer adds no second compression.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capturelab.errors import InputError

# librdkafka names; each has the same meaning in the Java client (see java_properties()).
BASE_PRODUCER_CONFIG: dict[str, str | int | bool] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "none",  # frames are zstd already
    "linger.ms": 20,
    "batch.size": 1_048_576,
    "message.timeout.ms": 300_000,  # then the batch goes back to the spool, never dropped
    "max.in.flight.requests.per.connection": 5,  # the idempotent maximum that keeps order
}
# Settings both clients understand under the same name, for ProducerPerformance side by side.
SHARED_WITH_JAVA = (
    "acks",
    "enable.idempotence",
    "compression.type",
    "linger.ms",
    "batch.size",
    "max.in.flight.requests.per.connection",
)


@dataclass(frozen=True)
class Security:
    """TLS + SASL/SCRAM towards the gateway's 9094 listener (None of these in the sim's PLAINTEXT)."""

    username: str
    password: str = field(repr=False)
    ca_file: str
    mechanism: str = "SCRAM-SHA-512"

    def librdkafka(self) -> dict[str, str]:
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_file,
        }


def parse_security(sec: Any, where: str) -> Security:
    """``security: {username, password_file, ca_file}`` from a tier's config file."""
    if not isinstance(sec, dict):
        raise InputError(f"{where} must be a mapping")
    for name in ("username", "password_file", "ca_file"):
        if not isinstance(sec.get(name), str) or not sec[name]:
            raise InputError(f"{where}.{name} is required")
    password_file = Path(sec["password_file"])
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise InputError(f"{where}.password_file {password_file}: {exc.strerror}") from None
    if not password:
        raise InputError(f"{where}.password_file {password_file} is empty")
    if not Path(sec["ca_file"]).is_file():
        raise InputError(f"{where}.ca_file {sec['ca_file']} does not exist")
    return Security(sec["username"], password, sec["ca_file"])


def producer_config(
    bootstrap: str,
    client_id: str,
    security: Security | None = None,
    overrides: Mapping[str, str | int | bool] | None = None,
) -> dict[str, str | int | bool]:
    """The confluent-kafka config for a capturelab producer; overrides may not weaken durability."""
    if not bootstrap.strip():
        raise InputError("bootstrap servers are empty")
    config: dict[str, str | int | bool] = dict(BASE_PRODUCER_CONFIG)
    config.update({"bootstrap.servers": bootstrap, "client.id": client_id})
    if security is not None:
        config.update(security.librdkafka())
    for key, value in (overrides or {}).items():
        if key in ("acks", "enable.idempotence") and value != BASE_PRODUCER_CONFIG[key]:
            raise InputError(f"producer setting {key}={value!r} would allow loss or duplicates")
        config[key] = value
    return config


def java_properties(config: Mapping[str, str | int | bool]) -> list[str]:
    """The same settings as ``key=value`` for Kafka's Java tools (ProducerPerformance)."""
    out = [f"bootstrap.servers={config['bootstrap.servers']}"]
    for key in SHARED_WITH_JAVA:
        value = config[key]
        out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out
