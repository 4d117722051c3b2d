"""Collector identity: keys, the authority's certificates, signed frames and the keyring."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from consentkit import AUTHORITY, OTHER, certificate, collector_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sinkdata import frame

from capturelab import identity
from capturelab.authority import Trust, load_trust
from capturelab.cli import main
from capturelab.errors import InputError
from capturelab.schema import (
    HEADER_SIZE,
    TRAILER_SIZE,
    FrameError,
    decode_batch,
    peek_batch,
    read_header,
    seal_crc,
)

TRUST = Trust({AUTHORITY.key_id: AUTHORITY.public_key()}, "test trust")


def _tampered(signed: bytes) -> bytes:
    """One payload byte changed and the CRC made to match: only the signature can tell."""
    header = read_header(signed)
    body = bytearray(signed)
    body[HEADER_SIZE + header.payload_len - 1] ^= 0x01
    head = bytearray(body[:HEADER_SIZE])
    seal_crc(head, body[HEADER_SIZE : header.payload_end])
    return bytes(head) + bytes(body[HEADER_SIZE:])


def test_a_signed_frame_reads_like_any_other_and_carries_its_trailer():
    key = collector_key("c1")
    signed = frame("c1", 0, 20, key=key)
    plain = frame("c1", 0, 20)
    assert len(signed) == len(plain) + TRAILER_SIZE
    header = read_header(signed)
    assert header.signed and not read_header(plain).signed
    assert header.frame_len == len(signed)
    assert decode_batch(signed).events == decode_batch(plain).events
    assert peek_batch(signed).pseudonym == peek_batch(plain).pseudonym


def test_frame_trailers_and_flags_are_checked():
    signed = frame("c1", 0, 5, key=collector_key("c1"))
    with pytest.raises(
        FrameError, match=r"payload_len is \d+ but \d+ payload bytes follow \(and a"
    ):
        read_header(signed[:-1])
    unknown = bytearray(signed)
    struct.pack_into("<B", unknown, 7, 0x80 | 0x01)
    with pytest.raises(FrameError, match=r"header\.flags 0x81 holds bits"):
        read_header(bytes(unknown))


def test_the_keyring_accepts_only_the_certified_key_of_the_frames_collector(tmp_path: Path):
    ring = identity.Keyring(tmp_path / "collectors", TRUST)
    ring.add(certificate("c1"), TRUST, "test")
    ring.add(certificate("c2"), TRUST, "test")
    ok = frame("c1", 0, 5, key=collector_key("c1"))
    assert ring.check(ok, read_header(ok)) == (identity.Verdict.OK, "")
    cases = {
        "unsigned": (frame("c1", 0, 5), "the frame is unsigned"),
        "another collector's key": (
            frame("c1", 0, 5, key=collector_key("c2")),
            f"signed by key {collector_key('c2').key_id}, which is certified for collector 'c2'",
        ),
        "tampered": (_tampered(ok), "does not match the frame"),
    }
    for name, (data, why) in cases.items():
        verdict, reason = ring.check(data, read_header(data))
        assert verdict is identity.Verdict.BAD, name
        assert why in reason and "collector 'c1'" in reason, (name, reason)
    unknown = frame("c3", 0, 5, key=collector_key("c3"))
    verdict, reason = ring.check(unknown, read_header(unknown))
    assert verdict is identity.Verdict.UNKNOWN
    assert f"key {collector_key('c3').key_id} is not certified" in reason


def test_the_keyring_is_kept_and_read_back_and_a_rotated_key_keeps_older_frames_valid(
    tmp_path: Path,
):
    ring = identity.Keyring(tmp_path, TRUST)
    assert ring.add(certificate("c1"), TRUST, "test")
    assert not ring.add(certificate("c1"), TRUST, "test")  # kept already
    new_key = identity.CollectorKey(Ed25519PrivateKey.generate(), "c1's rotated key")
    assert ring.add(certificate("c1", key=new_key), TRUST, "test")
    again = identity.Keyring(tmp_path, TRUST)
    for key in (collector_key("c1"), new_key):
        data = frame("c1", 0, 5, key=key)
        assert again.check(data, read_header(data))[0] is identity.Verdict.OK


def test_a_certificate_not_signed_by_a_trusted_key_or_altered_is_refused(tmp_path: Path):
    ring = identity.Keyring(tmp_path, TRUST)
    with pytest.raises(InputError, match="which test trust does not trust"):
        ring.add(certificate("c1", signer=OTHER), TRUST, "control-0@3")
    doc = certificate("c1").encode()
    doc["body"]["collector_id"] = "c2"  # the same key claimed for another collector
    altered = identity.parse_certificate(doc, "msg")
    with pytest.raises(InputError, match="msg: collector key: the signature does not match"):
        ring.add(altered, TRUST, "msg")
    assert ring.keys == {} and not list(tmp_path.glob("*.json"))
    # a keyring file edited by hand: the altered certificate is dropped when it is read
    (tmp_path / "c2.json").write_text(json.dumps([doc]))
    assert identity.Keyring(tmp_path, TRUST).keys == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("signature"), "signature: the signature must be a mapping"),
        (lambda d: d["body"].update(key="AAAA"), "body.key holds 3 bytes, not 32"),
        (lambda d: d["body"].update(issued="2026-13-45"), "body.issued '2026-13-45' is not an"),
        (lambda d: d["body"].update(collector_id="C 1"), "body.collector_id: collector id"),
        (lambda d: d.update(kind="consent_record"), "not a collector key certificate"),
    ],
)
def test_a_malformed_certificate_names_the_field(change, message):
    doc = certificate("c1").encode()
    change(doc)
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        identity.parse_certificate(doc, "cert.json")


def test_the_collector_checks_its_own_certificate(tmp_path: Path):
    key = collector_key("c1")
    identity.check_own(key, certificate("c1"), "c1", TRUST, "cert.json")
    with pytest.raises(InputError, match="certifies collector 'c1', this is 'c2'"):
        identity.check_own(key, certificate("c1"), "c2", TRUST, "cert.json")
    with pytest.raises(InputError, match=f"certifies key {collector_key('c9').key_id}, but"):
        identity.check_own(key, certificate("c1", key=collector_key("c9")), "c1", TRUST, "x")


def test_keygen_and_certify_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    key, pub, cert = tmp_path / "c.key", tmp_path / "c.pub", tmp_path / "c.cert.json"
    assert main(["collector", "keygen", "--key", str(key), "--public", str(pub)]) == 0
    first = key.read_bytes()
    assert main(["collector", "keygen", "--key", str(key), "--public", str(pub)]) == 0
    assert key.read_bytes() == first  # never replaced
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    authority_key, authority_pub = tmp_path / "a.key", tmp_path / "a.pub"
    assert (
        main(["consent", "keygen", "--key", str(authority_key), "--public", str(authority_pub)])
        == 0
    )
    args = ["consent", "certify", "--key", str(authority_key), "--public", str(pub)]
    assert main([*args, "--collector", "pi-1", "--out", str(cert)]) == 0
    loaded = identity.load_certificate(cert)
    identity.check_own(identity.load_key(key), loaded, "pi-1", load_trust(authority_pub), "c")
    capsys.readouterr()
    assert main([*args, "--collector", "Pi 1"]) == 2
    assert "--collector: collector id 'Pi 1' must be" in capsys.readouterr().err
    stamp = pub.stat().st_mtime_ns
    assert main(["collector", "keygen", "--key", str(key), "--public", str(pub)]) == 0
    assert pub.stat().st_mtime_ns == stamp  # the same public half is not rewritten
    key.chmod(0o644)
    assert main(["collector", "keygen", "--key", str(key), "--public", str(pub)]) == 2
    assert "the collector key has mode 0644" in capsys.readouterr().err
    assert main([*args[:-2], "--public", str(tmp_path / "none.pub"), "--collector", "x"]) == 2
    assert "cannot read the collector public key" in capsys.readouterr().err


def test_a_certificate_on_the_control_topic_round_trips():
    cert = certificate("c1")
    value = identity.control_value(cert)
    assert identity.control_certificate(value, "m") == cert
    assert identity.control_certificate(b'{"type": "consent_granted"}', "m") is None
    assert identity.control_certificate(b"not json", "m") is None
    doc = json.loads(value)
    doc["collector_id"] = "c2"
    with pytest.raises(InputError, match="m: collector_id differs"):
        identity.control_certificate(json.dumps(doc).encode(), "m")


def test_a_damaged_keyring_entry_costs_only_itself_and_is_never_rewritten_away(tmp_path: Path):
    good, bad = certificate("c1").encode(), certificate("c1", signer=OTHER).encode()
    (tmp_path / "c1.json").write_text(json.dumps([bad, good]))
    ring = identity.Keyring(tmp_path, TRUST)
    assert list(ring.keys["c1"]) == [collector_key("c1").key_id]  # the good one after the bad
    rotated = identity.CollectorKey(Ed25519PrivateKey.generate(), "c1's next key")
    assert ring.add(certificate("c1", key=rotated), TRUST, "test")
    kept = json.loads((tmp_path / "c1.json").read_text())
    assert kept[:2] == [bad, good] and len(kept) == 3  # the one not used now is still there
    (tmp_path / "c2.json").write_text(json.dumps([certificate("c1").encode()]))
    assert "c2" not in identity.Keyring(tmp_path, TRUST).keys  # filed under another id
    (tmp_path / "c3.json").write_text("{not json")
    assert set(identity.Keyring(tmp_path, TRUST).keys) == {"c1"}


def test_certificate_messages_are_keyed_by_collector_and_key():
    a, b = certificate("c1"), certificate("c1", key=collector_key("c1-next"))
    assert identity.control_key(a) != identity.control_key(b)
    assert identity.control_key(a) == f"collector:c1:{a.key_id}".encode()
