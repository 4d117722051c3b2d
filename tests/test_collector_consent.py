"""The daemon's consent gate: signed records only, regions at run time, never a crash loop."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from collectorkit import collector_config, running, wait_for, write_consent
from test_collector_units import Gate

from capturelab import authority
from capturelab.collector import synth
from capturelab.collector.daemon import Collector
from capturelab.consent import ControlMessage, ControlType, verify_grant
from capturelab.schema import decode_batch


def _refused(c: Collector, needle: str) -> None:
    wait_for(lambda: c.state == "refused" and needle in c.reason, f"refused with {needle!r}", 20)
    assert not c.readers, "no device is open while the record is refused"


def _capturing(c: Collector) -> None:
    wait_for(lambda: c.state == "capturing" and len(c.readers) == 2, "capture", 20)


def _edit(path: Path, change: Callable[[str], str]) -> None:
    text = change(path.read_text())
    tmp = path.with_suffix(".edit")
    tmp.write_text(text)
    tmp.replace(path)
    time.sleep(0.05)  # a distinct mtime


BAD_RECORDS = [
    ("one-byte", lambda t: t.replace("region: us", "region: ut"), "the signature does not match"),
    ("unsigned", lambda t: t.split("signature:")[0], "unsigned: signature and grant_signature"),
    ("bad-date", lambda t: re.sub("granted: .*", "granted: 2026-13-45", t), "field granted"),
    ("not-yaml", lambda t: t + "\n  : [", "is not valid YAML"),
]


@pytest.mark.parametrize(("name", "change", "needle"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_a_bad_record_is_refused_named_and_the_daemon_keeps_running(tmp_path, name, change, needle):
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    with running(Collector(config, producer_factory=Gate)) as c:
        _capturing(c)
        _edit(config.consent_file, change)
        _refused(c, needle)
        assert str(config.consent_file) in c.reason
        assert json.loads(config.status_path.read_text())["state"] in {"refused", "capturing"}
        write_consent(config.consent_file, ["keys:timing", "mouse"])
        _capturing(c)  # the same process: it never exited over the record
        assert c.stopping is False


def test_an_expired_record_and_an_unknown_signer_are_refused(tmp_path):
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:timing"], expires="2026-01-02T00:00:00Z")
    with running(Collector(config, producer_factory=Gate)) as c:
        _refused(c, "consent expired 2026-01-02")
        write_consent(config.consent_file, ["keys:timing", "mouse"])
        _capturing(c)
        # The trust file now holds only a key that did not sign this record: refused at once.
        signer = authority.load_authority(tmp_path / "authority.key").key_id
        config.consent_authority_file.unlink()
        authority.generate(tmp_path / "other.key", config.consent_authority_file)
        _refused(c, f"signed by key {signer}, which {config.consent_authority_file} does not")


@pytest.mark.parametrize(
    ("extra", "record_region", "needle"),
    [
        ({"region": "eu"}, "us", "this host: region eu is excluded"),
        ({}, "eu", "the record's region: region eu is excluded"),
        ({"region": "us", "excluded_regions": ["us", "eu"]}, "ca", "this host: region us is"),
    ],
)
def test_an_excluded_region_is_refused_at_run_time(tmp_path, extra, record_region, needle):
    config = collector_config(tmp_path, "127.0.0.1:9092", **extra)
    write_consent(config.consent_file, ["keys:timing", "mouse"], region=record_region)
    with running(Collector(config, producer_factory=Gate)) as c:
        _refused(c, needle)
    allowed = collector_config(tmp_path, "127.0.0.1:9092", **extra, lawful_basis_override="consent")
    with running(Collector(allowed, producer_factory=Gate)) as c:
        _capturing(c)


def test_grant_and_revocation_carry_the_authority_signature(tmp_path):
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    trust = authority.load_trust(config.consent_authority_file)
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        _capturing(c)
        synth.play(synth.build_session(2, 5, canaries=False), injector, 0)
        assert synth.wait_drained(injector, 10)
        wait_for(c.settled, "delivery")
        write_consent(config.consent_file, ["keys:timing", "mouse"], revoked="2026-06-01T00:00:00Z")
        _refused(c, "consent revoked 2026-06-01")
        wait_for(c.settled, "the control messages")
    injector.close()
    control = [ControlMessage.decode(v) for t, v in Gate.sent if t == "capture.control"]
    assert [m.type for m in control] == [
        ControlType.CONSENT_GRANTED,
        ControlType.CONSENT_REVOKED,
        ControlType.ERASURE_REQUESTED,
    ]
    for message in control:
        assert message.grant is not None
        verify_grant(message.pseudonym, message.grant, message.signature, trust, "control")
    assert control[-1].grant is not None and control[-1].grant.revoked is not None
    frames = [v for t, v in Gate.sent if t == "capture.events"]
    assert frames and decode_batch(frames[0]).pseudonym == control[0].pseudonym
