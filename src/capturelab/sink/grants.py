"""Consent grants on the storage node: ``<root>/consent/<pseudonym>.json``.

Collectors announce each grant on the control topic (``consent_granted``: scopes, lawful basis,
window, region; never the participant id). The sink keeps every distinct grant of a pseudonym
in one file, rewritten atomically, so the dataset builder can apply the consent filter where
the data is. Each grant is kept with the consent authority's signature over it, and the builder
verifies it again (``load_verified``): a grant written into the file by hand is not consent. An
erasure removes the file together with the data; the tombstone stays.

A grant the sink's region policy refuses (``capturelab.consent.RegionPolicy``) is never kept: its
reason is, in ``<root>/consent/<pseudonym>.refused`` (``refuse``), and while a pseudonym has a
refusal and no kept grant the sink stores none of its frames (``refusals``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capturelab.authority import Signature, Trust
from capturelab.consent import ConsentRecord, grant_fields, grant_record, verify_grant
from capturelab.durable import fsync_dir, write_atomic
from capturelab.errors import InputError
from capturelab.sink.layout import Layout, check_pseudonym


def _path(layout: Layout, pseudonym: str) -> Path:
    return layout.consent / f"{check_pseudonym(pseudonym)}.json"


def _raw(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable consent grant file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("grants"), list):
        raise InputError(f"{path}: expected an object with a list 'grants'")
    return list(data["grants"])


def record(layout: Layout, grant: ConsentRecord, signature: Signature) -> bool:
    """Keep a grant (its participant_id is the pseudonym) with the authority's signature over
    it; False when it was already kept."""
    path = _path(layout, grant.participant_id)
    grants = _raw(path)
    entry = {**grant_fields(grant), "signature": signature.encode()}
    if entry in grants:
        return False
    layout.consent.mkdir(parents=True, exist_ok=True)
    grants.append(entry)
    grants.sort(key=lambda g: (str(g.get("granted")), str(g.get("expires"))))
    body = json.dumps({"pseudonym": grant.participant_id, "grants": grants}, indent=1)
    write_atomic(path, body.encode() + b"\n")
    return True


def _entry(pseudonym: str, entry: Any, where: str) -> tuple[ConsentRecord, Signature | None]:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping of grant fields")
    fields = {k: v for k, v in entry.items() if k != "signature"}
    signature = None
    if "signature" in entry:
        signature = Signature.decode(entry["signature"], f"{where}.signature")
    return grant_record(pseudonym, fields, where), signature


def load(layout: Layout, pseudonym: str) -> list[ConsentRecord]:
    """Every grant kept for a pseudonym, unverified; a damaged file names itself and the grant."""
    path = _path(layout, pseudonym)
    return [
        _entry(pseudonym, entry, f"{path} grants[{i}]")[0] for i, entry in enumerate(_raw(path))
    ]


def load_verified(
    layout: Layout, pseudonym: str, trust: Trust
) -> tuple[list[ConsentRecord], list[str]]:
    """The grants the authority signed for this pseudonym, and why each other one is refused
    (unsigned, altered, another pseudonym's, an untrusted key: each names the file and grant)."""
    path = _path(layout, pseudonym)
    kept: list[ConsentRecord] = []
    refused: list[str] = []
    for i, entry in enumerate(_raw(path)):
        where = f"{path} grants[{i}]"
        try:
            grant, signature = _entry(pseudonym, entry, where)
            verify_grant(bytes.fromhex(pseudonym), grant, signature, trust, where)
        except InputError as exc:
            refused.append(str(exc))
        else:
            kept.append(grant)
    return kept, refused


def kept(layout: Layout, pseudonym: str) -> bool:
    """Whether any grant of this pseudonym is kept."""
    return _path(layout, pseudonym).exists()


def _refused_path(layout: Layout, pseudonym: str) -> Path:
    return layout.consent / f"{check_pseudonym(pseudonym)}.refused"


def refuse(layout: Layout, pseudonym: str, reason: str) -> None:
    """Remember (durably) why this pseudonym's grant was refused; its frames are not stored."""
    layout.consent.mkdir(parents=True, exist_ok=True)
    write_atomic(_refused_path(layout, pseudonym), reason.encode() + b"\n")


def refusals(layout: Layout) -> dict[str, str]:
    """Every pseudonym whose grant was refused and that has no kept grant, with the reason: the
    sink stores none of their frames."""
    out: dict[str, str] = {}
    for path in sorted(layout.consent.glob("*.refused")):
        pseudonym = path.name.removesuffix(".refused")
        try:
            if kept(layout, pseudonym):
                continue
        except InputError:
            continue  # not a pseudonym's name: no frame can match it
        try:
            out[pseudonym] = path.read_text().strip() or "grant refused"
        except OSError as exc:
            out[pseudonym] = f"{path}: unreadable ({exc.strerror}): frames refused"
    return out


def forget(layout: Layout, pseudonym: str) -> int:
    """Remove a pseudonym's grants and its refusal (erasure); how many files were removed."""
    removed = 0
    for path in (_path(layout, pseudonym), _refused_path(layout, pseudonym)):
        if path.exists():
            path.unlink()
            removed += 1
    if removed:
        fsync_dir(layout.consent)
    return removed
