"""The deployed sink: hardened, consuming over TLS+SCRAM, landing batches once, erasing on request."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from capturelab import authority
from capturelab.consent import ControlMessage, ControlType, sign_erasure
from capturelab.schema import pseudonymize

VENV = "/opt/capturelab/venv"
CONFIG = "/etc/capturelab/sink.yml"

PRODUCE = r"""
import json, sys
from datetime import UTC, datetime
from confluent_kafka import Producer
from capturelab import gateway
from capturelab.consent import ControlMessage, ControlType
from capturelab.schema import Batch, DeviceClass, InputEvent, encode_batch, pseudonymize
from capturelab.transport import Security, producer_config

creds = json.load(open("/root/producer.json"))
sec = Security(creds["username"], creds["password"], "/etc/capturelab/ca.pem")
bootstrap = sys.argv[1]
p = Producer(producer_config(bootstrap, "verify", sec))
secret = b"molecule-lab-secret-0123456789"
mode = sys.argv[2]
if mode == "batches":
    for who, cid in (("alice", "c1"), ("bob", "c2")):
        pseud = pseudonymize(secret, who)
        for b in range(20):
            events = tuple(
                InputEvent(b * 25 + i, i, 1_795_000_000_000_000_000 + (b * 25 + i) * 1_000_000,
                           DeviceClass.MOUSE, 2, 0, i)
                for i in range(25)
            )
            p.produce(gateway.CAPTURE_TOPIC, key=cid, value=encode_batch(Batch(cid, pseud, events)))
else:  # a control message made on the controller (hex): the node never holds the authority key
    value = bytes.fromhex(mode)
    p.produce(gateway.CONTROL_TOPIC, key=json.loads(value)["pseudonym"].encode(), value=value)
assert p.flush(60) == 0
print(pseudonymize(secret, "bob").hex())
"""


SECRET = b"molecule-lab-secret-0123456789"
BOB = pseudonymize(SECRET, "bob")


def _erasure(signed: bool) -> str:
    """bob's erasure: signed on the controller by the scenario's authority, or forged (unsigned)."""
    now = datetime.now(UTC)
    if not signed:
        return (
            ControlMessage(ControlType.ERASURE_REQUESTED, BOB, "c2", now, "forged").encode().hex()
        )
    key = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "consent" / "authority.key"
    return sign_erasure(authority.load_authority(key), BOB, "c2", now, "verify").encode().hex()


def _status(host) -> dict:
    return json.loads(
        host.check_output(f"{VENV}/bin/capturelab sink status --config {CONFIG} --json")
    )


def _bootstrap(host) -> str:
    for line in host.file(CONFIG).content_string.splitlines():
        if line.startswith("bootstrap_servers:"):
            return json.loads(line.split(":", 1)[1])
    raise AssertionError("no bootstrap_servers in the sink config")


def _produce(host, mode: str) -> str:
    cmd = host.run(f"cat > /root/produce.py <<'PYEOF'\n{PRODUCE}\nPYEOF")
    assert cmd.rc == 0
    out = host.run(f"{VENV}/bin/python /root/produce.py {_bootstrap(host)} {mode}")
    assert out.rc == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


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
    _produce(host, "batches")
    doc = _wait(lambda: (a := _audit(host))["events"] == 1000 and a, "1000 events on disk")
    assert (
        doc["ok"]
        and doc["collectors"]["c1"]["gaps"] == []
        and doc["collectors"]["c2"]["duplicates"] == 0
    )
    status = _status(host)
    assert status["state"] == "running" and status["counters"]["quarantined"] == 0
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
    bob = _produce(host, _erasure(signed=True))
    _wait(lambda: host.file(f"/srv/capture/tombstones/{bob}.json").exists, "the tombstone")
    after = _wait(lambda: (a := _audit(host))["events"] == 500 and a, "bob's 500 events erased")
    assert list(after["collectors"]) == ["c1"]
    assert not host.file(f"/srv/capture/segments/{bob}").exists
