"""The sink's configuration file (``/etc/capturelab/sink.yml``, written by the ``sink`` role)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from capturelab import gateway
from capturelab.consent import RegionFields, parse_region_policy
from capturelab.errors import InputError
from capturelab.fields import int_fields, positive_numbers, string_fields
from capturelab.transport import Security, parse_security
from capturelab.yamlfile import read_yaml


@dataclass(frozen=True)
class SinkConfig(RegionFields):
    """The sink's settings. Its regions (``RegionFields``): the sink does not start in an excluded
    region, and refuses a grant whose region is excluded (and every frame of that participant),
    unless a lawful basis is declared for the host."""

    root: Path
    bootstrap_servers: str
    # The consent authority's public key(s) (capturelab.authority): every control message must be
    # signed by one of them (capturelab.consent.verify_control); re-read when it changes.
    consent_authority_file: Path
    group_id: str = "capturelab-sink"
    client_id: str = "capturelab-sink"
    capture_topic: str = gateway.CAPTURE_TOPIC
    control_topic: str = gateway.CONTROL_TOPIC
    retention_days: int = 30
    min_free_bytes: int = 1 << 30
    flush_max_messages: int = 500
    flush_interval_ms: int = 200
    status_interval_s: float = 5.0
    # How segments are written (capturelab.sink.appender): "auto" (O_DIRECT where the filesystem
    # takes it), "direct" (required) or "buffered" (the page cache).
    direct_io: str = "auto"
    # Trained zstd dictionaries the collectors may use (their ids are in each frame's header).
    dictionaries: tuple[Path, ...] = ()
    # Store a frame only when a collector key the consent authority certified for the frame's
    # collector signed it (capturelab.identity); any other frame is quarantined and counted.
    require_collector_auth: bool = True
    # Store a participant's frames only while a grant signed by the authority is kept here.
    require_grant: bool = True
    security: Security | None = field(default=None, repr=False)

    @property
    def status_path(self) -> Path:
        return self.root / "state" / "status.json"


DIRECT_IO_MODES = {"auto": None, "direct": True, "buffered": False}

_INTS = {
    "retention_days": 1,
    "min_free_bytes": 0,
    "flush_max_messages": 1,
    "flush_interval_ms": 1,
}


def parse_config(data: Any, where: str) -> SinkConfig:
    if not isinstance(data, dict):
        raise InputError(f"{where}: must be a mapping")
    known = set(SinkConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for name in ("root", "bootstrap_servers", "consent_authority_file"):
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise InputError(f"{where}: field {name} is required (a non-empty string)")
    kwargs: dict[str, Any] = {
        "root": Path(data["root"]),
        "bootstrap_servers": data["bootstrap_servers"],
        "consent_authority_file": Path(data["consent_authority_file"]),
    }
    kwargs.update(
        string_fields(data, where, ("group_id", "client_id", "capture_topic", "control_topic"))
    )
    kwargs.update(int_fields(data, where, _INTS))
    kwargs.update(positive_numbers(data, where, ("status_interval_s",)))
    mode = data.get("direct_io", "auto")
    if mode not in DIRECT_IO_MODES:
        raise InputError(
            f"{where}: field direct_io must be one of {', '.join(DIRECT_IO_MODES)}, got {mode!r}"
        )
    kwargs["direct_io"] = mode
    for name in ("root", "consent_authority_file"):
        if not kwargs[name].is_absolute():
            raise InputError(f"{where}: field {name} must be an absolute path, got {data[name]!r}")
    dicts = data.get("dictionaries", [])
    if not isinstance(dicts, list) or not all(
        isinstance(d, str) and d.startswith("/") for d in dicts
    ):
        raise InputError(f"{where}: field dictionaries must be a list of absolute paths")
    kwargs["dictionaries"] = tuple(Path(d) for d in dicts)
    for name in ("require_collector_auth", "require_grant"):
        if name in data:
            if not isinstance(data[name], bool):
                raise InputError(f"{where}: field {name} must be true or false")
            kwargs[name] = data[name]
    kwargs.update(asdict(parse_region_policy(data, where)))
    sec = data.get("security")
    if sec is not None:
        kwargs["security"] = parse_security(sec, f"{where}: security")
    return SinkConfig(**kwargs)


def load_config(path: Path) -> SinkConfig:
    return parse_config(read_yaml(path, "sink config"), f"sink config {path}")
