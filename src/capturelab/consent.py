"""Consent: the one implementation of the rules that capture, storage and the dataset all import.

A consent record says who agreed (participant id, which never leaves the collector and the
controller's vault), to what (scopes), on which lawful basis, from when to when, and whether it
was revoked. Three places check it:

- capture: the daemon refuses to start, and stops, unless the record is valid now
  (``decide``), and drops events outside the granted scopes (``scope_for``);
- storage: the collector announces each grant (``consent_granted``, without the participant id)
  and a revocation becomes an erasure request on the control topic (``ControlMessage``); the
  sink keeps the grants beside the data and acts on the erasures;
- dataset: only events inside a valid grant window and its scopes are kept (``permits``).

Records are signed by the consent authority (``capturelab.authority``) on the controller: the
record itself (``signature``, over every field, the participant id included) and the grant the
storage node will see (``grant_signature``, over the grant fields and the pseudonym, never the
participant id). ``load_signed_record`` refuses an unsigned, altered or wrongly signed record,
naming the file and the reason; nothing is captured under a record it refused.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capturelab.authority import Authority, Signature, Trust
from capturelab.errors import InputError
from capturelab.exclusions import NONE, Exclusions, parse_exclusions
from capturelab.schema import (
    PSEUDONYM_BYTES,
    ContextEvent,
    DeviceClass,
    Event,
    ScreenshotEvent,
    pseudonymize,
)
from capturelab.yamlfile import read_yaml


class Scope(enum.StrEnum):
    KEYS_TIMING = "keys:timing"  # key classes and timing only: no content (the default)
    KEYS_TEXT = "keys:text"  # key content (still scrubbed, and never in secure-input mode)
    MOUSE = "mouse"
    SCREENSHOTS = "screenshots"
    CONTEXT = "context"  # focused application and (redacted) window title


class LawfulBasis(enum.StrEnum):
    """GDPR Art. 6(1) bases; research capture normally rests on explicit consent."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


class Status(enum.StrEnum):
    VALID = "valid"
    NOT_YET = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    MISSING = "missing"


DEFAULT_SCOPES = frozenset({Scope.KEYS_TIMING})


@dataclass(frozen=True)
class ConsentRecord:
    participant_id: str
    scopes: frozenset[Scope]
    lawful_basis: LawfulBasis
    granted: datetime
    expires: datetime
    revoked: datetime | None = None
    region: str = ""
    # The participant's own excluded apps and windows (on top of the collector's and the
    # defaults); covered by the record signature, never sent to the storage tier.
    exclude: Exclusions = NONE

    def __post_init__(self) -> None:
        if self.granted.tzinfo is None or self.expires.tzinfo is None:
            raise InputError("consent: granted and expires must carry a time zone")
        if self.expires <= self.granted:
            raise InputError(
                f"consent for {self.participant_id}: expires ({self.expires.isoformat()}) is not "
                f"after granted ({self.granted.isoformat()})"
            )
        if Scope.KEYS_TEXT in self.scopes and Scope.KEYS_TIMING not in self.scopes:
            # keys:text implies timing: the content rides on the same key events.
            object.__setattr__(self, "scopes", self.scopes | {Scope.KEYS_TIMING})

    def status(self, at: datetime) -> Status:
        if self.revoked is not None and at >= self.revoked:
            return Status.REVOKED
        if at < self.granted:
            return Status.NOT_YET
        if at >= self.expires:
            return Status.EXPIRED
        return Status.VALID

    def window_end(self) -> datetime:
        """When capture had to stop: the revocation or the expiry, whichever is first."""
        return min(self.expires, self.revoked) if self.revoked else self.expires


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: Status
    reason: str
    scopes: frozenset[Scope] = field(default_factory=frozenset)


def decide(record: ConsentRecord | None, at: datetime) -> Decision:
    """May we capture now? The reason is always a sentence a participant can read."""
    if record is None:
        return Decision(False, Status.MISSING, "no consent record: nothing is captured")
    status = record.status(at)
    if status is Status.VALID:
        scopes = ", ".join(sorted(record.scopes))
        return Decision(
            True,
            status,
            f"consent valid until {record.expires.isoformat()} for {scopes}",
            record.scopes,
        )
    reasons = {
        Status.NOT_YET: f"consent starts {record.granted.isoformat()}",
        Status.EXPIRED: f"consent expired {record.expires.isoformat()}",
        Status.REVOKED: f"consent revoked {record.revoked.isoformat() if record.revoked else ''}",
    }
    return Decision(False, status, reasons[status] + ": nothing is captured")


def scope_for(event: Event) -> Scope:
    """The scope an event needs. Key content is governed separately (keys:text, flags)."""
    if isinstance(event, ContextEvent):
        return Scope.CONTEXT
    if isinstance(event, ScreenshotEvent):
        return Scope.SCREENSHOTS
    if event.device is DeviceClass.KEYBOARD:
        return Scope.KEYS_TIMING
    return Scope.MOUSE


def permits(record: ConsentRecord, event: Event) -> bool:
    """Was this event captured inside a valid grant and its scopes? (the dataset filter)"""
    at = datetime.fromtimestamp(event.wall_ns / 1e9, tz=UTC)
    return record.status(at) is Status.VALID and scope_for(event) in record.scopes


# --- Reading records --------------------------------------------------------------------------


def parse_time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{where} {value!r} is not an ISO 8601 time") from None
    else:
        raise InputError(f"{where} must be an ISO 8601 time, got {value!r}")
    if parsed.tzinfo is None:
        raise InputError(f"{where} {value!r} has no time zone (write e.g. 2026-01-01T00:00:00Z)")
    return parsed


def parse_record(data: Mapping[str, Any], where: str = "consent") -> ConsentRecord:
    """Build a record from a mapping; every error names the field (and file, via ``where``)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    unknown = set(data) - set(RECORD_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    pid = data.get("participant_id")
    if not isinstance(pid, str) or not pid.strip():
        raise InputError(f"{where}.participant_id must be a non-empty string")
    raw_scopes = data.get("scopes", [s.value for s in DEFAULT_SCOPES])
    if not isinstance(raw_scopes, list) or not raw_scopes:
        raise InputError(
            f"{where}.scopes must be a non-empty list of {', '.join(s.value for s in Scope)}"
        )
    scopes: set[Scope] = set()
    for i, s in enumerate(raw_scopes):
        try:
            scopes.add(Scope(s))
        except ValueError:
            raise InputError(
                f"{where}.scopes[{i}] {s!r} is not one of {', '.join(x.value for x in Scope)}"
            ) from None
    try:
        basis = LawfulBasis(str(data.get("lawful_basis")))
    except ValueError:
        raise InputError(
            f"{where}.lawful_basis {data.get('lawful_basis')!r} is not one of "
            f"{', '.join(b.value for b in LawfulBasis)}"
        ) from None
    for required in ("granted", "expires"):
        if required not in data:
            raise InputError(f"{where}.{required} is missing")
    revoked = data.get("revoked")
    region = data.get("region", "")
    if not isinstance(region, str):
        raise InputError(f"{where}.region must be a string such as eu or us")
    return ConsentRecord(
        participant_id=pid.strip(),
        scopes=frozenset(scopes),
        lawful_basis=basis,
        granted=parse_time(data["granted"], f"{where}.granted"),
        expires=parse_time(data["expires"], f"{where}.expires"),
        revoked=parse_time(revoked, f"{where}.revoked") if revoked is not None else None,
        region=region.lower(),
        exclude=parse_exclusions(data.get("exclude"), f"{where}.exclude"),
    )


def load_record(path: Path) -> ConsentRecord:
    """A consent file (YAML or JSON); a missing or malformed file names itself and the field.

    The signature, if any, is not checked here: capture uses ``load_signed_record``."""
    data = read_yaml(path, "consent record")
    if isinstance(data, Mapping):
        data = {k: v for k, v in data.items() if k not in SIGNATURE_FIELDS}
    return parse_record(data, where=str(path))


# --- Signed records -------------------------------------------------------------------------

RECORD_FIELDS = (
    "participant_id",
    "scopes",
    "lawful_basis",
    "granted",
    "expires",
    "revoked",
    "region",
    "exclude",
)
SIGNATURE_FIELDS = ("signature", "grant_signature")
RECORD_KIND = "consent_record"
GRANT_KIND = "consent_grant"
ERASURE_KIND = "erasure_request"


def record_fields(record: ConsentRecord) -> dict[str, Any]:
    """Every field of a record in one canonical form: what the record signature covers.

    ``exclude`` is there only when it lists a pattern, so a record signed before the field
    existed still verifies."""
    fields = {"participant_id": record.participant_id, **grant_fields(record)}
    if record.exclude.fields():
        fields["exclude"] = record.exclude.fields()
    return fields


def grant_body(pseudonym: bytes, record: ConsentRecord) -> dict[str, Any]:
    """What the grant signature covers: the pseudonym and the grant, never the participant id."""
    return {"pseudonym": pseudonym.hex(), **grant_fields(record)}


@dataclass(frozen=True)
class SignedRecord:
    record: ConsentRecord
    signature: Signature
    grant_signature: Signature


def sign_record(record: ConsentRecord, authority: Authority, secret: bytes) -> SignedRecord:
    pseudonym = pseudonymize(secret, record.participant_id)
    return SignedRecord(
        record,
        authority.sign(RECORD_KIND, record_fields(record)),
        authority.sign(GRANT_KIND, grant_body(pseudonym, record)),
    )


def signed_document(signed: SignedRecord) -> dict[str, Any]:
    """The record file's content: the fields, then both signatures (YAML or JSON)."""
    fields = {k: v for k, v in record_fields(signed.record).items() if v is not None}
    return {
        **fields,
        "signature": signed.signature.encode(),
        "grant_signature": signed.grant_signature.encode(),
    }


def parse_signed_record(
    data: Any, trust: Trust, secret: bytes, where: str = "consent"
) -> SignedRecord:
    """A record whose two signatures verify against the trust file, or InputError naming why."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    record = parse_record({k: v for k, v in data.items() if k not in SIGNATURE_FIELDS}, where)
    missing = [name for name in SIGNATURE_FIELDS if name not in data]
    if missing:
        raise InputError(
            f"{where}: unsigned: {' and '.join(missing)} missing (sign it on the controller "
            "with capturelab consent sign)"
        )
    signature = Signature.decode(data["signature"], f"{where}.signature")
    grant_signature = Signature.decode(data["grant_signature"], f"{where}.grant_signature")
    trust.verify(RECORD_KIND, record_fields(record), signature, f"{where}: consent record")
    body = grant_body(pseudonymize(secret, record.participant_id), record)
    trust.verify(
        GRANT_KIND,
        body,
        grant_signature,
        f"{where}: grant_signature (signed for another lab secret, or altered)",
    )
    return SignedRecord(record, signature, grant_signature)


def load_signed_record(path: Path, trust: Trust, secret: bytes) -> SignedRecord:
    """A signed consent file; every refusal names the file and the reason."""
    return parse_signed_record(read_yaml(path, "consent record"), trust, secret, where=str(path))


def sign_grant(authority: Authority, pseudonym: bytes, grant: ConsentRecord) -> Signature:
    """The authority's signature over a grant as the storage tier knows it (no participant id)."""
    return authority.sign(GRANT_KIND, grant_body(pseudonym, grant))


def verify_grant(
    pseudonym: bytes, grant: ConsentRecord, signature: Signature | None, trust: Trust, where: str
) -> None:
    """The storage tier's check of a grant it was sent: signed by the authority for this
    pseudonym. Raises InputError naming ``where`` and the reason."""
    if signature is None:
        raise InputError(f"{where}: unsigned grant (no signature from the consent authority)")
    trust.verify(GRANT_KIND, grant_body(pseudonym, grant), signature, f"{where}: grant")


def region_allowed(
    region: str, excluded: Iterable[str], lawful_basis_override: str | None
) -> tuple[bool, str]:
    """Excluded regions (default: eu) are refused unless an explicit lawful basis is declared."""
    excluded_set = {r.lower() for r in excluded}
    if region.lower() not in excluded_set:
        return True, f"region {region or 'unset'} is not excluded"
    if lawful_basis_override:
        try:
            LawfulBasis(lawful_basis_override)
        except ValueError:
            raise InputError(
                f"lawful basis {lawful_basis_override!r} is not one of "
                f"{', '.join(b.value for b in LawfulBasis)}"
            ) from None
        return (
            True,
            f"region {region} is excluded, but lawful basis {lawful_basis_override} is declared",
        )
    return (
        False,
        f"region {region} is excluded (GDPR): declare a lawful basis for this host (lawful_basis_override)",
    )


DEFAULT_EXCLUDED_REGIONS = ("eu",)


@dataclass(frozen=True)
class RegionPolicy:
    """Where a tier refuses to capture, store or build: a record whose region is excluded, or a
    host in an excluded region, unless a lawful basis is declared for the host. The daemon, the
    sink and the dataset builder each hold one (``collector.yml``, ``sink.yml``, ``--region``)."""

    region: str = ""  # this host's region
    excluded_regions: tuple[str, ...] = DEFAULT_EXCLUDED_REGIONS
    lawful_basis_override: str = ""

    def refusal(self, record_region: str) -> str:
        """Why this region policy refuses a record of ``record_region`` ('' when it does not):
        the record's region is judged first, then the host's."""
        override = self.lawful_basis_override or None
        for whose, region in (("the record's region", record_region), ("this host", self.region)):
            allowed, reason = region_allowed(region, self.excluded_regions, override)
            if not allowed:
                return f"{whose}: {reason}"
        return ""

    def host_refusal(self) -> str:
        """Why this host may not hold anything at all ('' when its region is allowed)."""
        allowed, reason = region_allowed(
            self.region, self.excluded_regions, self.lawful_basis_override or None
        )
        return "" if allowed else f"this host: {reason}"


@dataclass(frozen=True, kw_only=True)
class RegionFields:
    """The region fields a tier's configuration carries (collector and sink config, the dataset
    builder's options): inherit them, read them with ``parse_region_policy``."""

    region: str = ""  # this host's region
    excluded_regions: tuple[str, ...] = DEFAULT_EXCLUDED_REGIONS
    lawful_basis_override: str = ""

    @property
    def regions(self) -> RegionPolicy:
        return RegionPolicy(self.region, self.excluded_regions, self.lawful_basis_override)


def parse_region_policy(data: Mapping[str, Any], where: str) -> RegionPolicy:
    """The ``region``, ``excluded_regions`` and ``lawful_basis_override`` fields of a config
    mapping (each optional); a bad one raises InputError naming ``where`` and the field."""
    out: dict[str, Any] = {}
    for name in ("region", "lawful_basis_override"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise InputError(f"{where}: field {name} must be a string")
        out[name] = value.strip().lower()
    if out["lawful_basis_override"] and out["lawful_basis_override"] not in set(LawfulBasis):
        raise InputError(
            f"{where}: field lawful_basis_override {out['lawful_basis_override']!r} is not one "
            f"of {', '.join(LawfulBasis)}"
        )
    excluded = data.get("excluded_regions", list(DEFAULT_EXCLUDED_REGIONS))
    if not isinstance(excluded, list) or not all(
        isinstance(r, str) and r.strip() for r in excluded
    ):
        raise InputError(f"{where}: field excluded_regions must be a list of region names")
    out["excluded_regions"] = tuple(r.strip().lower() for r in excluded)
    return RegionPolicy(**out)


# --- The control topic ------------------------------------------------------------------------


class ControlType(enum.StrEnum):
    CONSENT_GRANTED = "consent_granted"  # carries the grant (no participant id) for the dataset
    CONSENT_REVOKED = "consent_revoked"
    ERASURE_REQUESTED = "erasure_requested"


GRANT_FIELDS = ("scopes", "lawful_basis", "granted", "expires", "revoked", "region")


def grant_fields(record: ConsentRecord) -> dict[str, Any]:
    """What the storage node may know of a grant: everything but the participant id."""
    return {
        "scopes": sorted(s.value for s in record.scopes),
        "lawful_basis": record.lawful_basis.value,
        "granted": record.granted.isoformat(),
        "expires": record.expires.isoformat(),
        "revoked": record.revoked.isoformat() if record.revoked else None,
        "region": record.region,
    }


def grant_record(pseudonym_hex: str, fields: Mapping[str, Any], where: str) -> ConsentRecord:
    """A grant as the storage node knows it: a consent record keyed by the pseudonym."""
    if not isinstance(fields, Mapping):
        raise InputError(f"{where}: expected a mapping of grant fields")
    unknown = set(fields) - set(GRANT_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown grant field(s) {', '.join(sorted(unknown))}")
    data = {k: v for k, v in fields.items() if v is not None}
    return parse_record({"participant_id": pseudonym_hex, **data}, where)


@dataclass(frozen=True)
class ControlMessage:
    """A message on the control topic (key = pseudonym hex, compacted)."""

    type: ControlType
    pseudonym: bytes
    collector_id: str
    at: datetime
    reason: str = ""
    # The grant (participant_id = the pseudonym) and the authority's signature over it: required
    # for consent_granted; on a revocation or erasure from a collector, the revoked grant, which
    # is its proof that the authority revoked it.
    grant: ConsentRecord | None = None
    signature: Signature | None = None

    def __post_init__(self) -> None:
        if len(self.pseudonym) != PSEUDONYM_BYTES:
            raise InputError(f"control.pseudonym must be {PSEUDONYM_BYTES} bytes")
        if self.at.tzinfo is None:
            raise InputError("control.at must carry a time zone")
        if self.type is ControlType.CONSENT_GRANTED and self.grant is None:
            raise InputError("control.grant is required for consent_granted")

    @property
    def key(self) -> bytes:
        return self.pseudonym.hex().encode()

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "version": 1,
            "type": self.type.value,
            "pseudonym": self.pseudonym.hex(),
            "collector_id": self.collector_id,
            "at": self.at.isoformat(),
            "reason": self.reason,
        }
        if self.grant is not None:
            data["grant"] = grant_fields(self.grant)
        if self.signature is not None:
            data["signature"] = self.signature.encode()
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ControlMessage:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"control message is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError("control message must be a JSON object")
        if data.get("version") != 1:
            raise InputError(f"control.version {data.get('version')!r} is not 1")
        try:
            ctype = ControlType(str(data.get("type")))
        except ValueError:
            raise InputError(f"control.type {data.get('type')!r} is unknown") from None
        try:
            pseudonym = bytes.fromhex(str(data.get("pseudonym", "")))
        except ValueError:
            raise InputError("control.pseudonym is not hex") from None
        collector = data.get("collector_id")
        if not isinstance(collector, str):
            raise InputError("control.collector_id must be a string")
        grant = None
        if "grant" in data:
            grant = grant_record(pseudonym.hex(), data["grant"], "control.grant")
        signature = None
        if "signature" in data:
            signature = Signature.decode(data["signature"], "control.signature")
        return cls(
            ctype,
            pseudonym,
            collector,
            parse_time(data.get("at"), "control.at"),
            str(data.get("reason", "")),
            grant,
            signature,
        )


# --- Who may say what on the control topic ----------------------------------------------------

CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of the storage node's clock a message may be


def erasure_body(ctype: ControlType, pseudonym: bytes, at: datetime, reason: str) -> dict[str, Any]:
    """What the authority signs for a revocation or erasure it requests (from the controller)."""
    return {"type": ctype.value, "pseudonym": pseudonym.hex(), "at": at.isoformat(),
            "reason": reason}  # fmt: skip


def sign_erasure(
    authority: Authority,
    pseudonym: bytes,
    collector_id: str,
    at: datetime,
    reason: str,
    *,
    ctype: ControlType = ControlType.ERASURE_REQUESTED,
) -> ControlMessage:
    """A revocation or erasure request signed by the consent authority (no grant needed)."""
    if ctype is ControlType.CONSENT_GRANTED:
        raise InputError("a grant is signed with the consent record (capturelab consent sign)")
    signature = authority.sign(ERASURE_KIND, erasure_body(ctype, pseudonym, at, reason))
    return ControlMessage(ctype, pseudonym, collector_id, at, reason, None, signature)


def verify_control(message: ControlMessage, trust: Trust, now: datetime, where: str) -> None:
    """The storage tier's check of a control message; InputError names ``where`` and why.

    Invariants: a grant is accepted only with the authority's signature over it for this very
    pseudonym. A revocation or erasure is accepted either signed by the authority itself
    (``sign_erasure``), or carrying an authority-signed grant of this pseudonym whose window had
    ended (revoked or expired) by the message's instant: a collector can end a consent the
    authority ended, never one that is still live. Nothing is dated ahead of ``now`` by more
    than ``CLOCK_SKEW``.
    """
    what = f"{where}: {message.type.value} from collector {message.collector_id!r}"
    if message.at > now + CLOCK_SKEW:
        raise InputError(f"{what} is dated {message.at.isoformat()}, ahead of this clock")
    if message.signature is None:
        raise InputError(f"{what} is unsigned (no signature from the consent authority)")
    if message.grant is not None:  # always so for consent_granted (ControlMessage checks it)
        verify_grant(message.pseudonym, message.grant, message.signature, trust, what)
        end = message.grant.window_end()
        if message.type is not ControlType.CONSENT_GRANTED and end > message.at:
            raise InputError(
                f"{what}: the signed grant is live until {end.isoformat()}, after the "
                f"message's instant {message.at.isoformat()} (only the authority can end it)"
            )
        return
    body = erasure_body(message.type, message.pseudonym, message.at, message.reason)
    trust.verify(ERASURE_KIND, body, message.signature, f"{what}: erasure request")
