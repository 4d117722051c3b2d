"""Collector identity: a per-collector Ed25519 key, certified by the consent authority, signs
every frame the collector seals.

Invariants:

- a collector's private key is made on the collector (``capturelab collector keygen``, mode
  0600) and never leaves it; the consent authority on the controller certifies its public half
  (``capturelab consent certify``): a *certificate* binds one collector id to one key, signed as
  the document kind ``collector_key``;
- every frame sealed with a key carries ``schema.FLAG_SIGNED``, the key's id and an Ed25519
  signature over ``schema.FRAME_DOMAIN``, the header and the payload. The header holds the
  collector id, the sequences and the CRC, so no byte of any of them changes unnoticed;
- a node accepts a frame only when a certificate signed by a trusted authority key names the
  frame's collector id and the very key that signed it (``Keyring.check``); an unsigned frame, a
  collector with no certificate, a key certified for another collector and a bad signature are
  each refused with a reason that names the collector and the key.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from capturelab.authority import (
    Authority,
    Signature,
    Trust,
    create_private_key,
    key_id,
    load_private_key,
    public_pem,
)
from capturelab.durable import write_atomic
from capturelab.errors import InputError
from capturelab.schema import (
    FrameHeader,
    frame_trailer,
    validate_collector_id,
)

log = logging.getLogger(__name__)

CERTIFICATE_KIND = "collector_key"
CONTROL_TYPE = "collector_key"  # a certificate's message type on the control topic
RAW_KEY_BYTES = 32


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class CollectorKey:
    """A collector's private key: signs frames (``schema.encode_batch(signer=...)``)."""

    def __init__(self, private: Ed25519PrivateKey, source: str) -> None:
        self._private = private
        self.source = source
        self.public = private.public_key()
        self.key_id = key_id(self.public)
        self._id_bytes = bytes.fromhex(self.key_id)

    def sign_frame(self, signed: bytes) -> bytes:
        """The trailer of a frame: key id, then the signature over ``signed``."""
        return self._id_bytes + self._private.sign(signed)

    def public_pem(self) -> bytes:
        return public_pem(self.public)


def ensure_key(path: Path) -> tuple[CollectorKey, bool]:
    """The collector's key, created (True) when absent, else loaded (False); never replaced."""
    try:
        return CollectorKey(create_private_key(path), str(path)), True
    except FileExistsError:
        return load_key(path), False


def load_key(path: Path) -> CollectorKey:
    return CollectorKey(load_private_key(path, "collector key"), str(path))


# --- Certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """The authority's word that ``public`` is collector ``collector_id``'s key."""

    collector_id: str
    public: Ed25519PublicKey
    issued: datetime
    signature: Signature

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def body(self) -> dict[str, Any]:
        return _body(self.collector_id, self.public, self.issued)

    def encode(self) -> dict[str, Any]:
        return {"kind": CERTIFICATE_KIND, "body": self.body(), "signature": self.signature.encode()}

    def verify(self, trust: Trust, where: str) -> None:
        trust.verify(CERTIFICATE_KIND, self.body(), self.signature, f"{where}: collector key")


def _body(collector_id: str, public: Ed25519PublicKey, issued: datetime) -> dict[str, Any]:
    return {
        "collector_id": collector_id,
        "key": base64.b64encode(_raw(public)).decode(),
        "issued": issued.isoformat(),
    }


def certify(
    authority: Authority, collector_id: str, public: Ed25519PublicKey, issued: datetime
) -> Certificate:
    validate_collector_id(collector_id)
    body = _body(collector_id, public, issued)
    return Certificate(collector_id, public, issued, authority.sign(CERTIFICATE_KIND, body))


def parse_certificate(data: Any, where: str) -> Certificate:
    """A certificate document; InputError names ``where`` and the field (no signature check)."""
    if not isinstance(data, Mapping) or data.get("kind") != CERTIFICATE_KIND:
        raise InputError(f"{where}: not a collector key certificate (kind {CERTIFICATE_KIND})")
    body = data.get("body")
    if not isinstance(body, Mapping) or set(body) != {"collector_id", "key", "issued"}:
        raise InputError(f"{where}: body must hold exactly collector_id, key and issued")
    collector_id = body["collector_id"]
    if not isinstance(collector_id, str):
        raise InputError(f"{where}: body.collector_id must be a string")
    try:
        validate_collector_id(collector_id)
        raw = base64.b64decode(str(body["key"]), validate=True)
        issued = datetime.fromisoformat(str(body["issued"]))
    except InputError as exc:
        raise InputError(f"{where}: body.collector_id: {exc}") from None
    except binascii.Error:
        raise InputError(f"{where}: body.key is not base64") from None
    except ValueError:
        raise InputError(f"{where}: body.issued {body['issued']!r} is not an ISO time") from None
    if len(raw) != RAW_KEY_BYTES:
        raise InputError(f"{where}: body.key holds {len(raw)} bytes, not {RAW_KEY_BYTES}")
    if issued.tzinfo is None:
        raise InputError(f"{where}: body.issued must carry a time zone")
    signature = Signature.decode(data.get("signature"), f"{where}: signature")
    return Certificate(collector_id, Ed25519PublicKey.from_public_bytes(raw), issued, signature)


def load_certificate(path: Path) -> Certificate:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the collector certificate: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"{path}: the collector certificate is not JSON ({exc})") from None
    return parse_certificate(data, str(path))


def check_own(
    key: CollectorKey, certificate: Certificate, collector_id: str, trust: Trust, where: str
) -> None:
    """The collector's start-up check: its certificate is the authority's, for this id and key."""
    certificate.verify(trust, where)
    if certificate.collector_id != collector_id:
        raise InputError(
            f"{where}: certifies collector {certificate.collector_id!r}, this is {collector_id!r}"
        )
    if certificate.key_id != key.key_id:
        raise InputError(
            f"{where}: certifies key {certificate.key_id}, but {key.source} is key {key.key_id}"
        )


# --- On the control topic ------------------------------------------------------------------------


def control_key(certificate: Certificate) -> bytes:
    """Keyed by collector and key: the compacted control topic keeps every certified key of a
    collector, so frames signed before a rotation still verify on a sink built later."""
    return f"collector:{certificate.collector_id}:{certificate.key_id}".encode()


def control_value(certificate: Certificate) -> bytes:
    doc = {
        "version": 1,
        "type": CONTROL_TYPE,
        "collector_id": certificate.collector_id,
        "certificate": certificate.encode(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def control_certificate(raw: bytes, where: str) -> Certificate | None:
    """The certificate a control message carries; None for any other kind of message."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None  # not ours to judge: the control decoder names what is wrong
    if not isinstance(data, dict) or data.get("type") != CONTROL_TYPE:
        return None
    certificate = parse_certificate(data.get("certificate"), f"{where}: certificate")
    if data.get("collector_id") != certificate.collector_id:
        raise InputError(f"{where}: collector_id differs from the certificate's")
    return certificate


# --- The storage tier's keyring ------------------------------------------------------------------


class Verdict(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"  # no certificate for this collector and key yet: the control topic may
    # hold it (the caller reads on, then asks again with final=True)
    BAD = "bad"


class Keyring:
    """Certified collector keys, by collector id, kept in ``<dir>/<collector id>.json``.

    Every certificate is verified against the trust before it is kept and again when the
    keyring is read at start (a key the authority no longer trusts is dropped, logged). All of a
    collector's certified keys stay valid, so frames sealed before a rotation still verify.
    """

    def __init__(self, directory: Path, trust: Trust) -> None:
        self.directory = directory
        self.keys: dict[str, dict[str, Certificate]] = {}
        # Every document of each file as read, used or not: rewriting a file never drops one
        # that failed here (a trust file being rotated, say) and may verify later.
        self._docs: dict[str, list[Any]] = {}
        for path in sorted(directory.glob("*.json")):
            self._load(path, trust)

    def _load(self, path: Path, trust: Trust) -> None:
        try:
            docs = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.error("collector keyring: %s: unreadable (%s): none of its keys is used", path, exc)
            return
        if not isinstance(docs, list):
            log.error("collector keyring: %s: not a list of certificates: not used", path)
            return
        self._docs[path.stem] = docs
        for i, doc in enumerate(docs):
            try:
                certificate = parse_certificate(doc, f"{path}[{i}]")
                certificate.verify(trust, f"{path}[{i}]")
                if certificate.collector_id != path.stem:
                    raise InputError(f"{path}[{i}]: certifies {certificate.collector_id!r}")
            except InputError as exc:
                log.error("collector keyring: %s: this certificate is not used", exc)
                continue
            self.keys.setdefault(certificate.collector_id, {})[certificate.key_id] = certificate

    def add(self, certificate: Certificate, trust: Trust, where: str) -> bool:
        """Keep a certificate (durably) once verified; False when it was kept already."""
        certificate.verify(trust, where)
        known = self.keys.setdefault(certificate.collector_id, {})
        if certificate.key_id in known:
            return False
        known[certificate.key_id] = certificate
        docs = self._docs.setdefault(certificate.collector_id, [])
        docs.append(certificate.encode())
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(
            self.directory / f"{certificate.collector_id}.json",
            json.dumps(docs, indent=1).encode() + b"\n",
        )
        return True

    def check(self, frame: bytes, header: FrameHeader) -> tuple[Verdict, str]:
        """Whether a certified key of the header's collector signed this frame."""
        who = f"collector {header.collector_id!r}"
        if not header.signed:
            return Verdict.BAD, f"{who}: the frame is unsigned (no collector key signed it)"
        key_bytes, signature, signed = frame_trailer(frame, header)
        kid = key_bytes.hex()
        certificate = self.keys.get(header.collector_id, {}).get(kid)
        if certificate is None:
            owner = self.owner(kid)
            if owner is not None:
                return Verdict.BAD, (
                    f"{who}: signed by key {kid}, which is certified for collector {owner!r}"
                )
            return Verdict.UNKNOWN, f"{who}: key {kid} is not certified for it"
        try:
            certificate.public.verify(signature, signed)
        except InvalidSignature:
            return Verdict.BAD, f"{who}: the signature of key {kid} does not match the frame"
        return Verdict.OK, ""

    def owner(self, kid: str) -> str | None:
        for collector_id, certificates in self.keys.items():
            if kid in certificates:
                return collector_id
        return None


def digest(certificate: Certificate) -> str:
    """What the collector remembers of a certificate it announced."""
    return hashlib.sha256(control_value(certificate)).hexdigest()
