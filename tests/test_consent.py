"""The consent rules every tier imports: windows, revocation, scopes, regions, control messages."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from consentkit import OTHER, erasure, granted, trust_file

from capturelab.authority import load_trust
from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    LawfulBasis,
    RegionPolicy,
    Scope,
    Status,
    decide,
    load_record,
    parse_record,
    parse_region_policy,
    permits,
    region_allowed,
    scope_for,
    verify_control,
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


def test_a_region_policy_judges_the_record_then_the_host():
    policy = parse_region_policy({"region": "CA", "excluded_regions": ["EU", "ca"]}, "cfg")
    assert policy == RegionPolicy("ca", ("eu", "ca"), "")
    assert policy.refusal("eu").startswith("the record's region: region eu is excluded")
    assert policy.refusal("us").startswith("this host: region ca is excluded")
    assert policy.host_refusal().startswith("this host: region ca is excluded")
    assert RegionPolicy("ca", ("eu", "ca"), "consent").refusal("eu") == ""
    assert RegionPolicy().refusal("us") == "" and RegionPolicy().refusal("EU") != ""
    assert parse_region_policy({}, "cfg") == RegionPolicy()  # eu is excluded by default
    with pytest.raises(InputError, match="cfg: field excluded_regions must be a list"):
        parse_region_policy({"excluded_regions": "eu"}, "cfg")


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


# --- verify_control: who may say what on the control topic ----------------------------------

NOW = datetime(2026, 2, 1, tzinfo=UTC)
P = pseudonymize(b"0123456789abcdef", "p-001")


def _trust(tmp_path: Path):

    return load_trust(trust_file(tmp_path))


def _refused(message: ControlMessage, tmp_path: Path, needle: str) -> None:

    with pytest.raises(InputError, match=needle) as caught:
        verify_control(message, _trust(tmp_path), NOW, "capture.control-0@7")
    assert "capture.control-0@7" in str(caught.value)  # names the message


def test_a_grant_counts_only_signed_by_the_authority_for_this_pseudonym(tmp_path: Path):

    good = granted(P, _rec())
    verify_control(good, _trust(tmp_path), NOW, "m")
    _refused(replace(good, signature=None), tmp_path, "is unsigned")
    _refused(granted(P, _rec(), signer=OTHER), tmp_path, "which .* does not trust")
    other = pseudonymize(b"0123456789abcdef", "p-002")
    moved = replace(good, pseudonym=other, grant=replace(good.grant, participant_id=other.hex()))
    _refused(moved, tmp_path, "signature does not match")  # p-001's grant replayed for p-002
    widened = replace(good, grant=replace(good.grant, scopes=frozenset(Scope)))
    _refused(widened, tmp_path, "signature does not match")


def test_a_collector_can_end_only_a_consent_the_authority_ended(tmp_path: Path):

    live = replace(granted(P, _rec()), type=ControlType.ERASURE_REQUESTED, at=NOW)
    _refused(live, tmp_path, "live until 2026-03-01")
    revoked = granted(P, _rec(revoked="2026-01-20T00:00:00Z"))
    verify_control(
        replace(revoked, type=ControlType.CONSENT_REVOKED, at=datetime(2026, 1, 20, tzinfo=UTC)),
        _trust(tmp_path),
        NOW,
        "m",
    )
    expired = replace(granted(P, _rec(expires="2026-01-15T00:00:00Z")), at=NOW)
    verify_control(replace(expired, type=ControlType.ERASURE_REQUESTED), _trust(tmp_path), NOW, "m")


def test_an_erasure_signed_by_the_authority_and_its_forgeries(tmp_path: Path):

    signed = erasure(P, NOW - timedelta(minutes=1), "collector-01")
    verify_control(signed, _trust(tmp_path), NOW, "m")
    assert ControlMessage.decode(signed.encode()) == signed  # the signature survives the wire
    _refused(replace(signed, reason="something else"), tmp_path, "does not match the erasure")
    _refused(replace(signed, type=ControlType.CONSENT_REVOKED), tmp_path, "does not match")
    _refused(replace(signed, pseudonym=bytes(32)), tmp_path, "does not match")
    _refused(replace(signed, signature=None), tmp_path, "is unsigned")
    ahead = erasure(P, NOW + timedelta(hours=1))
    _refused(ahead, tmp_path, "ahead of this clock")
    with pytest.raises(InputError, match="a grant is signed with the consent record"):
        erasure(P, NOW, ctype=ControlType.CONSENT_GRANTED)
