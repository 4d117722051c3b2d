"""The deployed sink: hardened, consuming over TLS+SCRAM, landing batches once, erasing on request."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from capturelab import authority, gateway, identity
from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    LawfulBasis,
    Scope,
    sign_erasure,
    sign_grant,
)
from capturelab.schema import Batch, DeviceClass, InputEvent, encode_batch, pseudonymize

VENV = "/opt/capturelab/venv"
CONFIG = "/etc/capturelab/sink.yml"

PRODUCE = r"""
import json, sys
from confluent_kafka import Producer
from capturelab.transport import Security, producer_config

creds = json.load(open("/root/producer.json"))
sec = Security(creds["username"], creds["password"], "/etc/capturelab/ca.pem")
p = Producer(producer_config(sys.argv[1], "verify", sec))
# (topic, key, value) in hex, made on the controller: the node never holds the authority's key
# nor a collector's. Each message is acknowledged before the next (a collector's order).
for topic, key, value in json.load(open(sys.argv[2])):
    p.produce(topic, key=bytes.fromhex(key), value=bytes.fromhex(value))
    assert p.flush(60) == 0
"""


SECRET = b"molecule-lab-secret-0123456789"
ALICE, BOB = pseudonymize(SECRET, "alice"), pseudonymize(SECRET, "bob")
COLLECTORS = {"c1": ALICE, "c2": BOB}


def _authority() -> authority.Authority:
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "consent" / "authority.key"
    return authority.load_authority(key)


def _erasure(signed: bool) -> list[tuple[str, bytes, bytes]]:
    """bob's erasure: signed on the controller by the scenario's authority, or forged (unsigned)."""
    now = datetime.now(UTC)
    if not signed:
        msg = ControlMessage(ControlType.ERASURE_REQUESTED, BOB, "c2", now, "forged")
    else:
        msg = sign_erasure(_authority(), BOB, "c2", now, "verify")
    return [(gateway.CONTROL_TOPIC, msg.key, msg.encode())]


def _batches(keys: dict[str, identity.CollectorKey]) -> list[tuple[str, bytes, bytes]]:
    """What two collectors send: their key certificates and grants, then 20 signed batches each
    (and c1's frames under c2's id signed by c1's key: a forgery, quarantined)."""
    signer, now = _authority(), datetime.now(UTC).replace(microsecond=0)
    grant = ConsentRecord("x", frozenset({Scope.MOUSE}), LawfulBasis.CONSENT,
                          datetime(2026, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC))  # fmt: skip
    out: list[tuple[str, bytes, bytes]] = []
    for cid, pseud in COLLECTORS.items():
        cert = identity.certify(signer, cid, keys[cid].public, now)
        out.append((gateway.CONTROL_TOPIC, identity.control_key(cert), identity.control_value(cert)))
        mine = replace(grant, participant_id=pseud.hex())
        msg = ControlMessage(ControlType.CONSENT_GRANTED, pseud, cid, mine.granted, "verify", mine,
                             sign_grant(signer, pseud, mine))  # fmt: skip
        out.append((gateway.CONTROL_TOPIC, msg.key, msg.encode()))
    for cid, pseud in COLLECTORS.items():
        for b in range(20):
            events = tuple(
                InputEvent(b * 25 + i, i, 1_795_000_000_000_000_000 + (b * 25 + i) * 1_000_000,
                           DeviceClass.MOUSE, 2, 0, i)
                for i in range(25)
            )  # fmt: skip
            frame = encode_batch(Batch(cid, pseud, events), signer=keys[cid].sign_frame)
            out.append((gateway.CAPTURE_TOPIC, cid.encode(), frame))
    forged = tuple(InputEvent(900 + i, i, 1_795_000_000_000_000_000, DeviceClass.MOUSE, 2, 0, i)
                   for i in range(5))  # fmt: skip
    out.append((gateway.CAPTURE_TOPIC, b"c2",
                encode_batch(Batch("c2", BOB, forged), signer=keys["c1"].sign_frame)))  # fmt: skip
    return out


def _status(host) -> dict:
    return json.loads(
        host.check_output(f"{VENV}/bin/capturelab sink status --config {CONFIG} --json")
    )


def _bootstrap(host) -> str:
    for line in host.file(CONFIG).content_string.splitlines():
        if line.startswith("bootstrap_servers:"):
            return json.loads(line.split(":", 1)[1])
    raise AssertionError("no bootstrap_servers in the sink config")


def _produce(host, messages: list[tuple[str, bytes, bytes]]) -> None:
    assert host.run(f"cat > /root/produce.py <<'PYEOF'\n{PRODUCE}\nPYEOF").rc == 0
    doc = json.dumps([(t, k.hex(), v.hex()) for t, k, v in messages])
    assert host.run(f"cat > /root/messages.json <<'JSONEOF'\n{doc}\nJSONEOF").rc == 0
    out = host.run(f"{VENV}/bin/python /root/produce.py {_bootstrap(host)} /root/messages.json")
    assert out.rc == 0, out.stderr


def _audit(host) -> dict:
    out = host.run(f"{VENV}/bin/capturelab sink verify --root /srv/capture --frames --json")
    return json.loads(out.stdout)


def _wait(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_unit_is_hardened_and_running(host):
    svc = host.service("capturelab-sink")
    assert svc.is_running and svc.is_enabled
    props = host.check_output(
        "systemctl show capturelab-sink -p User -p ProtectSystem -p NoNewPrivileges -p ReadWritePaths "
        "-p PrivateTmp -p RequiresMountsFor"
    )
    for expected in (
        "User=capturelab-sink",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/srv/capture",
        "PrivateTmp=yes",
    ):
        assert expected in props, props


def test_installed_from_the_wheelhouse_without_an_index(host):
    reqs = host.check_output("cat /opt/capturelab/wheelhouse/*/requirements.txt")
    assert "capturelab==" in reqs and "confluent_kafka==" in reqs
    assert host.run(f"{VENV}/bin/capturelab --version").rc == 0


def test_config_uses_tls_and_scram(host):
    cfg = host.file(CONFIG)
    assert cfg.mode == 0o640 and cfg.group == "capturelab-sink"
    assert ":9094" in cfg.content_string and "password_file" in cfg.content_string
    assert host.file("/etc/capturelab/sink.password").mode == 0o640


def test_the_trust_file_is_deployed_and_named_in_the_config(host):
    trust = host.file("/etc/capturelab/authority.pub")
    assert trust.exists and trust.user == "root" and trust.mode == 0o644
    assert "BEGIN PUBLIC KEY" in trust.content_string  # the public half only
    assert (
        "consent_authority_file: /etc/capturelab/authority.pub" in host.file(CONFIG).content_string
    )


def test_batches_land_exactly_once_then_erasure_leaves_nothing(host):
    keys = {cid: identity.CollectorKey(Ed25519PrivateKey.generate(), cid) for cid in COLLECTORS}
    _produce(host, _batches(keys))
    doc = _wait(lambda: (a := _audit(host))["events"] == 1000 and a, "1000 events on disk")
    assert (
        doc["ok"]
        and doc["collectors"]["c1"]["gaps"] == []
        and doc["collectors"]["c2"]["duplicates"] == 0
    )
    status = _wait(lambda: (st := _status(host))["counters"]["quarantined"] == 1 and st,
                   "the forged frame quarantined")  # fmt: skip
    assert status["state"] == "running" and status["counters"]["unauthenticated"] == 1
    assert status["collector_keys"] == 2 and status["require_collector_auth"] is True
    # auto: O_DIRECT where the volume takes it (the probe below is the store's own)
    probe = host.run(
        f"{VENV}/bin/python -c 'import pathlib, sys; from capturelab.sink.appender import "
        'direct_io_supported as d; sys.exit(0 if d(pathlib.Path("/srv/capture/state")) else 3)\''
    )
    assert probe.rc in (0, 3), probe.stderr
    assert status["write_mode"] == ("direct" if probe.rc == 0 else "buffered")
    assert 'direct_io: "auto"' in host.file(CONFIG).content_string
    _produce(host, _erasure(signed=False))
    refused = _wait(lambda: (st := _status(host))["refused_control_messages"] == 1 and st,
                    "the forged erasure refused")  # fmt: skip
    assert "unsigned" in refused["last_refused_control_message"]
    assert (
        _audit(host)["events"] == 1000
        and not host.file(f"/srv/capture/tombstones/{BOB.hex()}.json").exists
    )
    _produce(host, _erasure(signed=True))
    bob = BOB.hex()
    _wait(lambda: host.file(f"/srv/capture/tombstones/{bob}.json").exists, "the tombstone")
    after = _wait(lambda: (a := _audit(host))["events"] == 500 and a, "bob's 500 events erased")
    assert list(after["collectors"]) == ["c1"]
    assert not host.file(f"/srv/capture/segments/{bob}").exists
