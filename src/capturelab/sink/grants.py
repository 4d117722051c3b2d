"""Consent grants on the storage node: ``<root>/consent/<pseudonym>.json``.

Collectors announce each grant on the control topic (``consent_granted``: scopes, lawful basis,
window, region; never the participant id). The sink keeps every distinct grant of a pseudonym
in one file, rewritten atomically, so the dataset builder can apply the consent filter where
the data is. An erasure removes the file together with the data; the tombstone stays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from capturelab.consent import ConsentRecord, grant_fields, grant_record
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


def record(layout: Layout, grant: ConsentRecord) -> bool:
    """Keep a grant (its participant_id is the pseudonym); False when it was already kept."""
    path = _path(layout, grant.participant_id)
    grants = _raw(path)
    fields = grant_fields(grant)
    if fields in grants:
        return False
    layout.consent.mkdir(parents=True, exist_ok=True)
    grants.append(fields)
    grants.sort(key=lambda g: (str(g["granted"]), str(g["expires"])))
    body = json.dumps({"pseudonym": grant.participant_id, "grants": grants}, indent=1)
    write_atomic(path, body.encode() + b"\n")
    return True


def load(layout: Layout, pseudonym: str) -> list[ConsentRecord]:
    """Every grant kept for a pseudonym; a damaged file names itself and the grant."""
    path = _path(layout, pseudonym)
    return [
        grant_record(pseudonym, fields, f"{path} grants[{i}]")
        for i, fields in enumerate(_raw(path))
    ]


def forget(layout: Layout, pseudonym: str) -> bool:
    """Remove a pseudonym's grants (erasure); True when there were any."""
    path = _path(layout, pseudonym)
    if not path.exists():
        return False
    path.unlink()
    fsync_dir(path.parent)
    return True
