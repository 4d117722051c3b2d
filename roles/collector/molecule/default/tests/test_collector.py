"""The collector on arm64 against a real gateway: consent gate, capture, spool, drain, no loss."""

from __future__ import annotations

import json
import os
import time

import testinfra

testinfra_hosts = ["collector-arm64"]
CLI = "/opt/capturelab/venv/bin/capturelab"
PY = "/opt/capturelab/venv/bin/python"
INJECT = "/run/capturelab-collector/inject"
CONSENT = "/etc/capturelab/consent.yml"


def gateway():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host("ansible://gateway-amd64", ansible_inventory=inventory)


def status(host) -> dict:
    return json.loads(host.check_output(f"{CLI} collector status --json"))


def wait(host, check, what: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        doc = status(host)
        if check(doc):
            return doc
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(doc)[:2000]}")


def synth(host, *args: str):
    return host.run(f"{CLI} synth --inject-dir {INJECT} {' '.join(args)}")


def test_service_is_hardened(host):
    unit = host.check_output(
        "systemctl show capturelab-collector -p User -p ProtectSystem -p ReadWritePaths -p NoNewPrivileges"
    )
    assert "User=capturelab-collector" in unit and "ProtectSystem=strict" in unit
    assert "ReadWritePaths=/var/spool/capturelab-collector" in unit and "NoNewPrivileges=yes" in unit
    assert "input" in host.user("capturelab-collector").groups
    secret = host.file("/etc/capturelab/lab.secret")
    assert secret.mode == 0o640 and secret.group == "capturelab-collector"


def test_captures_with_consent_and_delivers(host):
    wait(host, lambda d: d["state"] == "capturing", "capture")
    result = synth(host, "--duration 40 --speed 0 --seed 3")  # 40 s: every canary kind
    assert result.rc == 0, result.stderr
    doc = wait(host, lambda d: d["spool"]["items"] == 0 and d["delivery"]["delivered_items"] > 0
               and d["counters"]["sealed_events"] > 0, "delivery")  # fmt: skip
    assert doc["consent"]["status"] == "valid" and "keys:text" in doc["consent"]["scopes"]
    # synth's password-manager window: every press in it withheld, and counted as such
    manifest = json.loads(result.stderr.strip().splitlines()[-1])
    want = manifest["excluded_presses"]
    got = doc["counters"]
    assert (got["excluded_keys"], got["excluded_clicks"]) == (want["keys"], want["clicks"])
    assert want["keys"] > 0 and got["excluded_spans"] >= 1 and doc["excluded"] == []


def test_the_rendered_config_holds_the_exclusions_and_reads_as_the_daemon_reads_it(host):
    config = host.file("/etc/capturelab/collector.yml").content_string
    assert "^signal$" in config and "Bank of " in config
    assert "Health record" in host.file(CONSENT).content_string  # signed with the record
    host.check_output(f"{CLI} collector check-config /etc/capturelab/collector.yml")
    bad = host.run(f"sed 's/Bank of /(Bank/' /etc/capturelab/collector.yml > /tmp/bad.yml && "
                   f"{CLI} collector check-config /tmp/bad.yml")  # fmt: skip
    assert bad.rc == 2 and "field exclude.titles[0] '(Bank' is not a regular expression" in bad.stderr


def test_refuses_without_consent(host):
    host.check_output(f"mv {CONSENT} {CONSENT}.away")
    try:
        doc = wait(host, lambda d: d["state"] == "refused", "the refusal", timeout=30)
        assert "no consent record" in doc["reason"]
        read_before = doc["counters"]["read"]
        result = synth(host, "--duration 3 --speed 0 --drain-timeout 2")
        assert result.rc != 0 and "did not read the injected events" in result.stderr
        assert status(host)["counters"].get("read", 0) in (0, read_before)
    finally:
        host.check_output(f"mv {CONSENT}.away {CONSENT}")
    wait(host, lambda d: d["state"] == "capturing", "capture again", timeout=30)


def test_spools_while_the_gateway_is_down_and_drains(host):
    gw = gateway()
    gw.check_output("systemctl stop kafka")
    try:
        result = synth(host, "--duration 30 --speed 10 --seed 4")
        assert result.rc == 0, result.stderr
        doc = wait(host, lambda d: d["spool"]["items"] >= 2 and d["delivery"]["last_error"],
                   "batches in the spool", timeout=60)  # fmt: skip
        assert "gateway unreachable" in doc["delivery"]["last_error"] or doc["delivery"]["last_error"]
    finally:
        gw.check_output("systemctl start kafka")
    wait(host, lambda d: d["spool"]["items"] == 0, "the spool to drain", timeout=300)


CONSUME = r"""
import json, sys, yaml
from confluent_kafka import Consumer
from capturelab.schema import decode_batch
cfg = yaml.safe_load(open("/etc/capturelab/collector.yml"))
want = int(sys.argv[1])
c = Consumer({"bootstrap.servers": cfg["bootstrap_servers"], "group.id": "molecule-verify",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([cfg["capture_topic"]])
seqs, empty = [], 0
while len(seqs) < want and empty < 60:
    m = c.poll(1.0)
    if m is None or m.error():
        empty += 1
        continue
    seqs += [e.seq for e in decode_batch(m.value()).events]
c.close()
print(json.dumps({"count": len(seqs), "distinct": len(set(seqs)), "max": max(seqs, default=-1)}))
"""


def test_every_event_arrived_once_in_sequence(host):
    next_seq = status(host)["spool"]["next_seq"]
    host.check_output(f"cat > /tmp/consume.py <<'PYEOF'\n{CONSUME}\nPYEOF")
    out = json.loads(host.check_output(f"{PY} /tmp/consume.py {next_seq}"))
    # Every number 0..next_seq-1 exactly once (a resend after an outage may repeat a batch on the
    # topic; the sink drops repeats by (collector, seq), so distinct is what must be complete).
    assert out["distinct"] == next_seq and out["max"] == next_seq - 1, out
