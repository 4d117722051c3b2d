"""The consent rules every tier imports: windows, revocation, scopes, regions, control messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    LawfulBasis,
    Scope,
    Status,
    decide,
    load_record,
    parse_record,
    permits,
    region_allowed,
    scope_for,
)
from capturelab.errors import InputError
from capturelab.schema import ContextEvent, DeviceClass, InputEvent, pseudonymize

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RECORD = {
    "participant_id": "p-001",
    "scopes": ["keys:timing", "mouse"],
    "lawful_basis": "consent",
    "granted": "2026-01-01T00:00:00Z",
    "expires": "2026-03-01T00:00:00Z",
    "region": "US",
}


def _rec(**kw: object) -> ConsentRecord:
    return parse_record(RECORD | kw)


def _key_event(at: datetime) -> InputEvent:
    return InputEvent(0, 0, int(at.timestamp() * 1e9), DeviceClass.KEYBOARD, 1, 30, 1)


def test_parse_defaults_and_normalises():
    rec = _rec()
    assert rec.scopes == {Scope.KEYS_TIMING, Scope.MOUSE}
    assert rec.lawful_basis is LawfulBasis.CONSENT
    assert rec.region == "us"
    assert parse_record({k: v for k, v in RECORD.items() if k != "scopes"}).scopes == {
        Scope.KEYS_TIMING
    }
    assert Scope.KEYS_TIMING in _rec(scopes=["keys:text"]).scopes, "text implies timing"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("participant_id", "", "consent.participant_id"),
        ("scopes", ["keys:everything"], "consent.scopes[0] 'keys:everything'"),
        ("scopes", [], "consent.scopes must be a non-empty list"),
        ("lawful_basis", "because", "consent.lawful_basis 'because'"),
        ("granted", "yesterday", "consent.granted 'yesterday' is not an ISO 8601 time"),
        (
            "expires",
            "2026-03-01T00:00:00",
            "consent.expires '2026-03-01T00:00:00' has no time zone",
        ),
        ("expires", "2025-12-01T00:00:00Z", "is not after granted"),
        ("colour", "blue", "unknown field(s) colour"),
    ],
)
def test_malformed_record_names_the_field(field: str, value: object, needle: str):
    with pytest.raises(InputError) as err:
        parse_record(RECORD | {field: value})
    assert needle in str(err.value)


def test_missing_field_and_file_are_named(tmp_path: Path):
    with pytest.raises(InputError, match=r"consent\.expires is missing"):
        parse_record({k: v for k, v in RECORD.items() if k != "expires"})
    bad = tmp_path / "p-001.yml"
    bad.write_text("participant_id: p-001\nlawful_basis: consent\ngranted: 2026-01-01T00:00:00Z\n")
    with pytest.raises(InputError, match=r"p-001\.yml\.expires is missing"):
        load_record(bad)
    with pytest.raises(InputError, match="cannot read consent record"):
        load_record(tmp_path / "absent.yml")


def test_decide_over_the_window():
    rec = _rec()
    assert not decide(None, T0).allowed
    assert decide(None, T0).status is Status.MISSING
    assert decide(rec, T0 - timedelta(seconds=1)).status is Status.NOT_YET
    now = decide(rec, T0 + timedelta(days=3))
    assert now.allowed and now.scopes == rec.scopes
    assert "keys:timing, mouse" in now.reason
    expired = decide(rec, datetime(2026, 3, 1, tzinfo=UTC))
    assert not expired.allowed and expired.status is Status.EXPIRED
    assert "expired 2026-03-01" in expired.reason


def test_revocation_stops_capture_from_that_moment():
    rec = _rec(revoked="2026-02-01T12:00:00Z")
    assert decide(rec, datetime(2026, 2, 1, 11, tzinfo=UTC)).allowed
    assert decide(rec, datetime(2026, 2, 1, 12, tzinfo=UTC)).status is Status.REVOKED
    assert rec.window_end() == datetime(2026, 2, 1, 12, tzinfo=UTC)


def test_dataset_filter_by_window_and_scope():
    rec = _rec()
    inside = T0 + timedelta(days=1)
    assert permits(rec, _key_event(inside))
    assert not permits(rec, _key_event(T0 - timedelta(days=1)))
    ctx = ContextEvent(1, 0, int(inside.timestamp() * 1e9), "firefox", "x")
    assert scope_for(ctx) is Scope.CONTEXT
    assert not permits(rec, ctx), "context was not granted"
    assert permits(_rec(scopes=["keys:timing", "context"]), ctx)
    mouse = InputEvent(2, 0, int(inside.timestamp() * 1e9), DeviceClass.MOUSE, 2, 0, 1)
    assert not permits(_rec(scopes=["keys:timing"]), mouse)


def test_excluded_regions():
    assert region_allowed("us", ["eu"], None)[0]
    ok, why = region_allowed("EU", ["eu"], None)
    assert not ok and "GDPR" in why
    assert region_allowed("eu", ["eu"], "consent")[0]
    with pytest.raises(InputError, match="lawful basis 'vibes'"):
        region_allowed("eu", ["eu"], "vibes")


def test_control_message_round_trip_and_errors():
    msg = ControlMessage(
        ControlType.ERASURE_REQUESTED,
        pseudonymize(b"0123456789abcdef", "p-001"),
        "collector-01",
        T0,
        "consent revoked",
    )
    assert ControlMessage.decode(msg.encode()) == msg
    assert msg.key == msg.pseudonym.hex().encode()
    with pytest.raises(InputError, match=r"control\.type 'delete_everything'"):
        ControlMessage.decode(msg.encode().replace(b"erasure_requested", b"delete_everything"))
    with pytest.raises(InputError, match="not JSON"):
        ControlMessage.decode(b"\xff")
