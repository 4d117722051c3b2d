"""The collector's configuration file (``/etc/capturelab/collector.yml``, written by the role).

Every error names the file and the field. The consent record and the lab secret live in files of
their own (deployed by the role, readable only by the service), named here by path.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from capturelab import gateway, keys
from capturelab.collector.context import DEFAULT_LOCK_SCREENS
from capturelab.collector.edge import DEFAULT_PAUSE_CHORD
from capturelab.collector.screenshot import TOOLS
from capturelab.consent import RegionFields, parse_region_policy
from capturelab.errors import InputError
from capturelab.exclusions import NONE, Exclusions, parse_exclusions
from capturelab.fields import int_fields, positive_numbers, string_fields
from capturelab.schema import validate_collector_id
from capturelab.transport import Security, parse_security
from capturelab.yamlfile import read_yaml

CONTEXT_SOURCES = ("none", "x11", "sway", "inject")


@dataclass(frozen=True)
class CollectorConfig(RegionFields):
    """The daemon's settings. Its regions (``RegionFields``): capture is refused for a record's
    region or this host's that is excluded, unless a lawful basis is declared for the host,
    checked at run time, not only by the role."""

    collector_id: str
    consent_file: Path
    # The consent authority's public key(s): a record it did not sign captures nothing.
    consent_authority_file: Path
    lab_secret_file: Path
    spool_dir: Path
    bootstrap_servers: str
    # This collector's Ed25519 key and the authority's certificate for it (capturelab.identity):
    # every frame is signed with it. Without both, frames go unsigned and a sink that requires
    # collector authentication (its default) quarantines them.
    identity_key: Path | None = None
    identity_certificate: Path | None = None
    runtime_dir: Path = Path("/run/capturelab-collector")
    spool_max_bytes: int = 1 << 30
    capture_topic: str = gateway.CAPTURE_TOPIC
    control_topic: str = gateway.CONTROL_TOPIC
    devices: tuple[Path, ...] | None = None  # None: every keyboard, mouse and touchpad (sysfs)
    sysfs_input_dir: Path = Path("/sys/class/input")
    dev_input_dir: Path = Path("/dev/input")
    inject_dir: Path | None = None
    context: str = "none"
    batch_interval_ms: int = 1000
    # A batch smaller than batch_min_events waits (up to batch_max_interval_ms): each batch
    # carries a 68-byte header and a pseudonym, which dominate a slow stream's bytes.
    batch_min_events: int = 256
    batch_max_interval_ms: int = 5000
    batch_max_events: int = 20_000
    zstd_level: int = 3
    dictionary_file: Path | None = None
    pause_chord: frozenset[int] = field(
        default_factory=lambda: keys.parse_chord(list(DEFAULT_PAUSE_CHORD), "pause_chord")
    )
    secret_prompts: tuple[str, ...] = keys.DEFAULT_SECRET_PROMPTS
    # Apps and windows where nothing is captured, on top of the defaults and the record's.
    exclude: Exclusions = NONE
    # Screen lockers by process name: while one runs nothing is captured ([] turns this off).
    lock_screens: tuple[str, ...] = DEFAULT_LOCK_SCREENS
    idle_flush_ms: int = 3000
    # Person names in the text scrubber and titles (Presidio, offline; the names extra).
    person_names: bool = False
    # Screenshots: off unless an interval is set AND the consent grants `screenshots`.
    screenshot_interval_s: float = 0.0
    screenshot_tool: str = "auto"
    screenshot_scale: float = 0.5
    screenshot_quality: int = 60
    consent_check_interval_s: float = 2.0
    device_rescan_interval_s: float = 5.0
    status_interval_s: float = 1.0
    message_timeout_ms: int = 300_000
    security: Security | None = field(default=None, repr=False)

    @property
    def status_path(self) -> Path:
        return self.spool_dir / "status.json"

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"


_INTS = {
    "spool_max_bytes": 1 << 20,
    "batch_interval_ms": 10,
    "batch_max_events": 1,
    "batch_min_events": 1,
    "batch_max_interval_ms": 10,
    "zstd_level": 1,
    "idle_flush_ms": 100,
    "message_timeout_ms": 1000,
    "screenshot_quality": 1,
}
_FLOATS = ("consent_check_interval_s", "device_rescan_interval_s", "status_interval_s")
_PATHS = ("consent_file", "consent_authority_file", "lab_secret_file", "spool_dir")
_OPTIONAL_PATHS = (
    "runtime_dir",
    "sysfs_input_dir",
    "dev_input_dir",
    "inject_dir",
    "dictionary_file",
    "identity_key",
    "identity_certificate",
)


def _path(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise InputError(f"{where} must be an absolute path, got {value!r}")
    return Path(value)


def parse_config(data: Any, where: str) -> CollectorConfig:
    if not isinstance(data, dict):
        raise InputError(f"{where}: must be a mapping")
    unknown = sorted(set(data) - set(CollectorConfig.__dataclass_fields__))
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}")
    cid = data.get("collector_id")
    if not isinstance(cid, str):
        raise InputError(f"{where}: field collector_id is required (a string)")
    try:
        kwargs: dict[str, Any] = {"collector_id": validate_collector_id(cid)}
    except InputError as exc:
        raise InputError(f"{where}: field collector_id: {exc}") from None
    kwargs.update(_paths(data, where))
    kwargs.update(_strings(data, where))
    kwargs.update(_numbers(data, where))
    kwargs.update(_devices(data, where))
    kwargs.update(_policy(data, where))
    kwargs.update(_regions(data, where))
    if ("identity_key" in kwargs) != ("identity_certificate" in kwargs):
        raise InputError(
            f"{where}: fields identity_key and identity_certificate go together (set both)"
        )
    if kwargs.get("context") == "inject" and "inject_dir" not in kwargs:
        raise InputError(f"{where}: field context is inject but inject_dir is not set")
    if "person_names" in data:
        if not isinstance(data["person_names"], bool):
            raise InputError(f"{where}: field person_names must be true or false")
        kwargs["person_names"] = data["person_names"]
    if data.get("security") is not None:
        kwargs["security"] = parse_security(data["security"], f"{where}: field security")
    return CollectorConfig(**kwargs)


def _paths(data: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PATHS:
        if name not in data:
            raise InputError(f"{where}: field {name} is required (an absolute path)")
        out[name] = _path(data[name], f"{where}: field {name}")
    for name in _OPTIONAL_PATHS:
        if data.get(name) is not None:
            out[name] = _path(data[name], f"{where}: field {name}")
    return out


def _strings(data: dict[str, Any], where: str) -> dict[str, Any]:
    if "bootstrap_servers" not in data:
        raise InputError(f"{where}: field bootstrap_servers must be a non-empty string")
    out: dict[str, Any] = dict(
        string_fields(data, where, ("bootstrap_servers", "capture_topic", "control_topic"))
    )
    tool = data.get("screenshot_tool", "auto")
    if tool not in TOOLS:
        raise InputError(
            f"{where}: field screenshot_tool {tool!r} is not one of {', '.join(TOOLS)}"
        )
    out["screenshot_tool"] = tool
    context = data.get("context", "none")
    if context not in CONTEXT_SOURCES:
        raise InputError(
            f"{where}: field context {context!r} is not one of {', '.join(CONTEXT_SOURCES)}"
        )
    out["context"] = context
    return out


def _numbers(data: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(int_fields(data, where, _INTS))
    for name, low, high in (
        ("screenshot_scale", 0.05, 1.0),
        ("screenshot_interval_s", 0.0, 3600.0),
    ):
        if name in data:
            value = data[name]
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not low <= value <= high
            ):
                raise InputError(
                    f"{where}: field {name} must be a number in {low}..{high}, got {value!r}"
                )
            out[name] = float(value)
    if 0 < out.get("screenshot_interval_s", 0) < 5:
        raise InputError(
            f"{where}: field screenshot_interval_s must be 0 (off) or at least 5 seconds"
        )
    if not 1 <= out.get("zstd_level", 3) <= 22:
        raise InputError(f"{where}: field zstd_level must be 1-22, got {out['zstd_level']}")
    out.update(positive_numbers(data, where, _FLOATS))
    return out


def _policy(data: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "pause_chord" in data:
        chord = data["pause_chord"]
        if not isinstance(chord, list):
            raise InputError(f"{where}: field pause_chord must be a list of key names")
        out["pause_chord"] = keys.parse_chord(chord, f"{where}: field pause_chord")
    if "secret_prompts" in data:
        out["secret_prompts"] = _patterns(data["secret_prompts"], f"{where}: field secret_prompts")
    if "exclude" in data:
        out["exclude"] = parse_exclusions(data["exclude"], f"{where}: field exclude")
    if "lock_screens" in data:
        out["lock_screens"] = _process_names(data["lock_screens"], f"{where}: field lock_screens")
    return out


def _regions(data: dict[str, Any], where: str) -> dict[str, Any]:
    return asdict(parse_region_policy(data, where))


def _devices(data: dict[str, Any], where: str) -> dict[str, Any]:
    devices = data.get("devices", "auto")
    if devices == "auto":
        return {}
    if not isinstance(devices, list) or not devices:
        raise InputError(f"{where}: field devices must be auto or a non-empty list of paths")
    return {
        "devices": tuple(_path(d, f"{where}: field devices[{i}]") for i, d in enumerate(devices))
    }


def _process_names(value: Any, where: str) -> tuple[str, ...]:
    """Names as /proc/<pid>/comm shows them: 1 to 15 characters, no slash."""
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list of process names")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not 1 <= len(name) <= 15 or "/" in name:
            raise InputError(
                f"{where}[{i}] {name!r} is not a process name as /proc/<pid>/comm shows it "
                "(1 to 15 characters, no slash: the kernel cuts longer names at 15)"
            )
    return tuple(value)


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise InputError(f"{where} must be a list of regular expressions")
    for i, pattern in enumerate(value):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(
                f"{where}[{i}] {pattern!r} is not a regular expression: {exc}"
            ) from None
    return tuple(value)


def load_config(path: Path) -> CollectorConfig:
    return parse_config(read_yaml(path, "collector config"), f"collector config {path}")
