"""A test consent authority: signed grants, revocations and erasures as the real tiers make them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capturelab import identity
from capturelab.authority import Authority
from capturelab.consent import ConsentRecord, ControlMessage, ControlType, sign_erasure, sign_grant

AUTHORITY = Authority(Ed25519PrivateKey.generate(), "the tests' consent authority")
OTHER = Authority(Ed25519PrivateKey.generate(), "a key nobody trusts")


def trust_file(folder: Path) -> Path:
    """The test authority's public key as a trust file in ``folder`` (written once)."""
    path = folder / "authority.pub"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(AUTHORITY.public_pem())
    return path


def granted(
    pseudonym: bytes, grant: ConsentRecord, collector: str = "c1", signer: Authority = AUTHORITY
) -> ControlMessage:
    """A consent_granted message for ``grant`` (its participant id becomes the pseudonym)."""
    grant = replace(grant, participant_id=pseudonym.hex())
    return ControlMessage(
        ControlType.CONSENT_GRANTED, pseudonym, collector, grant.granted, "test", grant,
        sign_grant(signer, pseudonym, grant),
    )  # fmt: skip


def erasure(
    pseudonym: bytes,
    at: datetime,
    collector: str = "c1",
    ctype: ControlType = ControlType.ERASURE_REQUESTED,
) -> ControlMessage:
    """A revocation or erasure signed by the test authority (as the controller sends one)."""
    return sign_erasure(AUTHORITY, pseudonym, collector, at, "test", ctype=ctype)


_COLLECTOR_KEYS: dict[str, identity.CollectorKey] = {}
ISSUED = datetime.fromisoformat("2026-11-01T00:00:00+00:00")


def collector_key(collector: str) -> identity.CollectorKey:
    """A test collector's frame-signing key (one per id, for the whole test run)."""
    if collector not in _COLLECTOR_KEYS:
        _COLLECTOR_KEYS[collector] = identity.CollectorKey(
            Ed25519PrivateKey.generate(), f"the test key of {collector}"
        )
    return _COLLECTOR_KEYS[collector]


def certificate(
    collector: str, key: identity.CollectorKey | None = None, signer: Authority = AUTHORITY
) -> identity.Certificate:
    """The authority's certificate of ``collector``'s key (``key``: another key instead)."""
    public = (key or collector_key(collector)).public
    return identity.certify(signer, collector, public, ISSUED)


def certificate_message(collector: str, **kwargs: object) -> tuple[bytes, bytes]:
    """(key, value) of the control message that announces ``certificate(collector, ...)``."""
    cert = certificate(collector, **kwargs)  # type: ignore[arg-type]
    return identity.control_key(cert), identity.control_value(cert)
