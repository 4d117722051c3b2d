"""A test consent authority: signed grants, revocations and erasures as the real tiers make them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
