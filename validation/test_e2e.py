"""End to end: ``capturelab synth`` on every collector -> Kafka -> sink -> dataset -> fine-tune.

Stages run in order and each records its wall-clock time (the report's timeline):

1. **capture**: synth types a realistic session (with planted canaries) on every collector at
   once; every event the collectors sequenced in that window must be stored exactly once (the
   sink's audit of that sequence window: nothing missing, nothing twice).
2. **erasure**: one collector switches to a fresh synthetic participant (a new consent record,
   signed on the controller with the consent authority's key, as provisioning would write it),
   captures, then that record is revoked (re-signed with ``revoked``). The collector must stop,
   and the storage node must be left with zero records of that pseudonym (segments, quarantine,
   grant), with a tombstone. Then the collector's own record, altered by one byte, must be
   refused while the daemon keeps running; the original is put back afterwards.
3. **dataset**: the redacted dataset is built on the storage node; none of the canaries may be
   in it, while the ordinary typed text is (so the canary check can fail).
4. **finetune**: ``playbooks/finetune.yml`` ships the dataset to the processing node and
   fine-tunes; the run's metrics must exist, name this dataset and hold a finite loss curve.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer
from conftest import Lab, assert_passed
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nodeconfig import first_bootstrap, read_yaml, run_json, sink_window

from capturelab import identity
from capturelab.authority import Authority
from capturelab.collector.synth import CANARY_KINDS, PHRASES, VAULT
from capturelab.consent import (
    ControlMessage,
    ControlType,
    parse_record,
    sign_grant,
    sign_record,
    signed_document,
)
from capturelab.errors import HostEnvironmentError
from capturelab.results import Result
from capturelab.schema import Batch, DeviceClass, InputEvent, encode_batch, pseudonymize
from capturelab.transport import producer_config
from capturelab.validate.checks import stage_timeline

SUITE = "e2e"
# Seconds this suite may take on the 2-core lab machine (its suite-time check fails past it),
# and which command runs it ("lab": make lab and make lab-full; "full": make lab-full only).
# Measured: 293.4 s (lab3, 14469df), 336.1 s (lab4, 5731863: 300 was too tight).
SUITE_BUDGET_S = 360
SUITE_PROFILE = "lab"
CONSENT = "/etc/capturelab/consent.yml"
COLLECTOR_CONFIG = "/etc/capturelab/collector.yml"
REPO = Path(__file__).resolve().parent.parent


class Run:
    """State shared by the stages of one end-to-end run."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.stages: list[tuple[str, float, float]] = []
        self.canaries: list[str] = []
        self.canary_kinds: list[str] = []
        self.failed: str | None = None
        self.dataset: dict[str, Any] = {}
        self.edge_findings: dict[str, int] = {}  # redaction at the collectors, by kind

    def edge(self, counts: dict[str, int]) -> None:
        for kind, n in counts.items():
            self.edge_findings[kind] = self.edge_findings.get(kind, 0) + n

    def stage(self, name: str, start: float) -> None:
        self.stages.append((name, start, time.time()))


@pytest.fixture(scope="module")
def e2e(evidence: dict[str, Any]) -> Any:
    run = Run()
    yield run
    evidence["timeline"] = stage_timeline(run.stages)


def _gate(run: Run, record: Any, check: str) -> None:
    if run.failed:
        result = Result(
            SUITE, check, "lab", "skip", tool="pytest", detail=f"not run: stage {run.failed} failed"
        )
        record(result)
        pytest.skip(result.detail)


def _status(lab: Lab, node: str) -> dict[str, Any]:
    doc: dict[str, Any] = run_json(lab, node, f"{lab.capturelab(node)} collector status --json")
    return doc


def _wait(what: str, probe: Any, timeout_s: float, every_s: float = 2.0) -> Any:
    deadline = time.time() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise HostEnvironmentError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _synth(lab: Lab, node: str, seconds: float, seed: int) -> dict[str, Any]:
    """Type a session on ``node`` and return its manifest (counts and canaries)."""
    config = read_yaml(lab, node, COLLECTOR_CONFIG)
    inject = config.get("inject_dir")
    if not inject:
        raise HostEnvironmentError(
            f"{node}: {COLLECTOR_CONFIG} has no inject_dir (collector_inject_dir): synth cannot "
            "reach the daemon without /dev/uinput"
        )
    manifest = f"/run/capturelab-synth-{seed}.json"
    command = (
        f"{lab.capturelab(node)} synth --inject-dir {inject} --duration {seconds:g} --seed {seed} "
        f"--speed 1 --manifest {manifest} --drain-timeout 120 >/dev/null && cat {manifest}; "
        f"rc=$?; rm -f {manifest}; exit $rc"
    )
    doc: dict[str, Any] = run_json(lab, node, command, int(seconds) + 300)
    return doc


def _drained(lab: Lab, node: str) -> dict[str, Any] | None:
    st = _status(lab, node)
    return st if st["spool"]["items"] == 0 else None


def _capture(lab: Lab, nodes: list[str], seconds: float, seed0: int) -> dict[str, Any]:
    """synth on ``nodes`` at once; per node: seq window, manifest, collector id."""
    before = {n: _status(lab, n) for n in nodes}
    for node, st in before.items():
        if st["state"] != "capturing":
            raise HostEnvironmentError(f"{node}: the collector is {st['state']}: {st['reason']}")
    manifests: dict[str, dict[str, Any]] = {}
    errors: list[str] = []

    def one(node: str, seed: int) -> None:
        try:
            manifests[node] = _synth(lab, node, seconds, seed)
        except Exception as exc:  # reported below with the node's name
            errors.append(f"{node}: {exc}")

    threads = [threading.Thread(target=one, args=(n, seed0 + i)) for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 400)
    if errors:
        raise HostEnvironmentError("; ".join(errors))
    out = {}
    for node in nodes:
        after = _wait(f"{node}'s spool to drain", lambda n=node: _drained(lab, n), 180)
        out[node] = {
            "collector_id": after["collector_id"],
            "first": before[node]["spool"]["next_seq"],
            "next": after["spool"]["next_seq"],
            "sealed": after["counters"].get("sealed_events", 0)
            - before[node]["counters"].get("sealed_events", 0),
            "pseudonym": after["pseudonym"],
            "manifest": manifests[node],
            "findings": _edge_delta(before[node]["counters"], after["counters"]),
            "withheld": {
                kind: after["counters"].get(f"excluded_{kind}", 0)
                - before[node]["counters"].get(f"excluded_{kind}", 0)
                for kind in ("keys", "clicks", "other", "spans")
            },
        }
    return out


def _edge_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Redactions the collector's edge filter made in the window, by kind."""
    old, new = before.get("findings", {}), after.get("findings", {})
    out = {f"edge: {k}": max(0, n - old.get(k, 0)) for k, n in new.items()}
    out["edge: keys withheld (secure input)"] = max(
        0, after.get("secure_input", 0) - before.get("secure_input", 0)
    )
    return {k: n for k, n in out.items() if n}


def _stored(lab: Lab, storage: str, root: str, sent: dict[str, Any]) -> dict[str, dict[str, Any]]:
    windows: dict[str, dict[str, Any]] = {}

    def complete() -> bool:
        for node, s in sent.items():
            if s["next"] > s["first"]:
                windows[node] = sink_window(
                    lab, storage, root, s["collector_id"], (s["first"], s["next"] - 1)
                )
        return all(w["stored"] >= w["expected"] for w in windows.values())

    with contextlib.suppress(HostEnvironmentError):  # what is missing is reported below
        _wait("the sink to store every event sent", complete, 180, 3)
    return windows


def _exactly_once(sent: dict[str, Any], windows: dict[str, dict[str, Any]]) -> list[Result]:
    results = []
    for node, s in sent.items():
        expected = s["next"] - s["first"]
        w = windows.get(node, {"stored": 0, "missing": [], "duplicates": 0})
        ok = expected > 0 and s["sealed"] == expected and w["stored"] == expected
        ok = ok and not w["missing"] and w["duplicates"] == 0
        results.append(
            Result(
                SUITE,
                "stored-exactly-once",
                node,
                "pass" if ok else "fail",
                value=w["stored"],
                target=expected,
                unit="events",
                tool="capturelab sink verify",
                detail=f"{s['collector_id']} seq {s['first']}..{s['next'] - 1}: sent "
                f"{expected} (sealed {s['sealed']}), stored {w['stored']}, missing "
                f"{w['missing'] or 'none'}, duplicates {w['duplicates']}"
                + ("" if expected else "; the collector sequenced nothing from synth"),
            )
        )
    return results


def _excluded_withheld(sent: dict[str, Any]) -> list[Result]:
    """What synth pressed while its password manager had focus, against what the collector
    says it withheld (its status); the dataset stage checks that nothing of it was stored."""
    results = []
    for node, s in sent.items():
        want = s["manifest"].get("excluded_presses", {"keys": 0, "clicks": 0})
        got = s["withheld"]
        ok = want["keys"] > 0 and (got["keys"], got["clicks"]) == (want["keys"], want["clicks"])
        results.append(
            Result(
                SUITE,
                "excluded-window-withheld",
                node,
                "pass" if ok else "fail",
                value=got["keys"] + got["clicks"],
                target=want["keys"] + want["clicks"],
                unit="presses",
                tool="capturelab synth --manifest; capturelab collector status",
                detail=f"synth pressed {want['keys']} keys and {want['clicks']} buttons while "
                f"{VAULT[0]} had focus; the collector withheld {got['keys']} key and "
                f"{got['clicks']} button presses and {got['other']} other events in "
                f"{got['spans']} excluded span(s) (no screenshots: the sim has no display)"
                + ("" if want["keys"] else "; synth planted no excluded_window canary"),
            )
        )
    return results


def test_capture_lands_exactly_once(lab: Lab, record: Any, e2e: Run) -> None:
    collectors = lab.nodes("collectors")
    storage = lab.nodes("storage")
    if not collectors or not storage:
        result = Result(
            SUITE,
            "stored-exactly-once",
            "lab",
            "skip",
            tool="pytest",
            detail="needs a collector and a storage node",
        )
        record(result)
        pytest.skip(result.detail)
    e2e.failed = "capture"
    start = time.time()
    root = str(read_yaml(lab, storage[0], "/etc/capturelab/sink.yml")["root"])
    seconds = float(lab.var(collectors[0], "validation_e2e_seconds", 20))
    sent = _capture(lab, collectors, seconds, 1000)
    windows = _stored(lab, storage[0], root, sent)
    e2e.canaries += [c["value"] for s in sent.values() for c in s["manifest"]["canaries"]]
    e2e.canary_kinds += [c["kind"] for s in sent.values() for c in s["manifest"]["canaries"]]
    for s in sent.values():
        e2e.edge(s["findings"])
    e2e.stage("capture", start)
    results = _exactly_once(sent, windows) + _excluded_withheld(sent)
    record(*results)
    assert_passed(results)
    e2e.failed = None


def _write_consent(lab: Lab, node: str, text: str) -> None:
    out = lab.run(node, f"cat > {CONSENT} <<'CAPTURELAB_EOF'\n{text}\nCAPTURELAB_EOF", 30)
    if out.rc != 0:
        raise HostEnvironmentError(f"{node}: cannot write {CONSENT}: {out.stderr.strip()}")


def _signed(lab: Lab, node: str, fields: dict[str, Any]) -> str:
    """A record signed as the collector role signs it: the controller's authority key."""
    key = lab.consent_authority(node)
    secret = str(lab.var(node, "collector_lab_secret", "")).encode()
    signed = sign_record(parse_record(fields, f"{node} test record"), key, secret)
    return yaml.safe_dump(signed_document(signed), sort_keys=False)


def _erased(lab: Lab, storage: str, root: str, prefix: str) -> dict[str, Any] | None:
    out = lab.run(storage, f"cat {root}/tombstones/{prefix}*.json 2>/dev/null", 30)
    if out.rc != 0 or not out.stdout.strip():
        return None
    stone: dict[str, Any] = json.loads(out.stdout)
    return stone if stone.get("state") == "erased" else None


def test_erasure_of_a_revoked_participant(lab: Lab, record: Any, e2e: Run) -> None:
    _gate(e2e, record, "erasure-leaves-zero-records")
    node, storage = lab.nodes("collectors")[-1], lab.nodes("storage")[0]
    root = str(read_yaml(lab, storage, "/etc/capturelab/sink.yml")["root"])
    e2e.failed = "erasure"
    start = time.time()
    original = lab.run(node, f"cat {CONSENT}", 30).stdout
    own = yaml.safe_load(original) or {}
    now = datetime.now(UTC).replace(microsecond=0)
    participant = {
        "participant_id": f"validation-e2e-{e2e.id}",
        "scopes": ["keys:text", "mouse", "context"],
        "lawful_basis": "consent",
        "granted": (now - timedelta(minutes=1)).isoformat(),
        "expires": (now + timedelta(hours=1)).isoformat(),
        "region": own.get("region", "lab"),
    }
    try:
        before = _status(lab, node)["pseudonym"]
        _write_consent(lab, node, _signed(lab, node, participant))
        _wait(
            f"{node} to capture for the new participant",
            lambda: (
                (st := _status(lab, node))["pseudonym"] != before and st["state"] == "capturing"
            ),
            60,
        )
        sent = _capture(lab, [node], 8, 2000)
        windows = _stored(lab, storage, root, sent)
        e2e.canaries += [c["value"] for c in sent[node]["manifest"]["canaries"]]
        e2e.canary_kinds += [c["kind"] for c in sent[node]["manifest"]["canaries"]]
        e2e.edge(sent[node]["findings"])
        prefix = sent[node]["pseudonym"]
        held = lab.run(storage, f"find {root}/segments -maxdepth 1 -name '{prefix}*' | wc -l", 30)
        landed = windows.get(node, {}).get("stored", 0)
        forged = _forgeries_refused(
            lab, node, storage, root=root, participant=participant, prefix=prefix
        )
        secret = str(lab.var(node, "collector_lab_secret", "")).encode()
        whole = pseudonymize(secret, participant["participant_id"])
        forged_frames = _forged_frames(lab, node, storage, pseudonym=whole)
        revoked = dict(participant, revoked=datetime.now(UTC).replace(microsecond=0).isoformat())
        _write_consent(lab, node, _signed(lab, node, revoked))
        stopped = _wait(
            f"{node} to stop capturing",
            lambda: (st := _status(lab, node))["state"] == "refused" and st,
            60,
        )
        stone = _wait(
            f"the tombstone of {prefix} on {storage}",
            lambda: _erased(lab, storage, root, prefix),
            180,
        )
        left = lab.run(
            storage,
            f"find {root}/segments {root}/quarantine {root}/consent -name '{prefix}*' "
            "2>/dev/null | wc -l",
            30,
        )
        altered = _refuses_altered(lab, node, original)
    finally:
        _write_consent(lab, node, original.rstrip("\n"))
    _wait(
        f"{node} to capture for its own participant again",
        lambda: _status(lab, node)["state"] == "capturing",
        60,
    )
    e2e.stage("erasure", start)
    remaining = int(left.stdout.strip() or "-1")
    results = [
        Result(
            SUITE,
            "erasure-had-data",
            node,
            "pass" if landed > 0 and held.stdout.strip() != "0" else "fail",
            value=landed,
            target=">0",
            unit="events",
            tool="capturelab sink verify",
            detail="the revoked participant's events were stored before the revocation "
            "(else the erasure check proves nothing)",
        ),
        Result(
            SUITE,
            "collector-stops-on-revocation",
            node,
            "pass",
            value=stopped["state"],
            target="refused",
            tool="capturelab collector status",
            detail=stopped["reason"],
        ),
        forged,
        forged_frames,
        altered,
        Result(
            SUITE,
            "erasure-leaves-zero-records",
            storage,
            "pass" if remaining == 0 else "fail",
            value=remaining,
            target=0,
            unit="files",
            tool="find on the array",
            detail=f"segments, quarantine and grant of {prefix}...; tombstone: "
            f"{stone['events_removed']} events, {stone['files_removed']} files removed",
        ),
    ]
    record(*results)
    assert_passed(results)
    e2e.failed = None


def _sink_status(lab: Lab, storage: str) -> dict[str, Any]:
    doc: dict[str, Any] = run_json(lab, storage, f"{lab.capturelab(storage)} sink status --json")
    return doc


def _forger_gateway(lab: Lab, storage: str, check: str) -> tuple[dict[str, Any], str] | Result:
    """The sink's config and the gateway address a forger would use, or the check's skip."""
    config = read_yaml(lab, storage, "/etc/capturelab/sink.yml")
    if config.get("security"):
        return Result(SUITE, check, storage, "skip", tool="kafka producer",
                      detail="the gateway needs TLS+SCRAM; the forgery checks run on PLAINTEXT "
                      "labs only so far")  # fmt: skip
    host, port = first_bootstrap(config, storage, "/etc/capturelab/sink.yml")
    return config, f"{host}:{port}"


def _forgeries_refused(
    lab: Lab, node: str, storage: str, *, root: str, participant: dict[str, Any], prefix: str
) -> Result:
    """Three forged control messages under ``node``'s collector id, sent through the gateway as
    a collector would: an unsigned erasure of the live participant, that participant's own
    signed (still live) grant sent as an erasure, and a grant signed by a key nobody trusts.
    The sink must refuse all three and erase nothing."""
    gateway = _forger_gateway(lab, storage, "forged-control-refused")
    if isinstance(gateway, Result):
        return gateway
    config, bootstrap = gateway
    secret = str(lab.var(node, "collector_lab_secret", "")).encode()
    pseudonym = pseudonymize(secret, participant["participant_id"])
    collector_id = str(_status(lab, node)["collector_id"])
    grant = replace(parse_record(participant, "forged grant"), participant_id=pseudonym.hex())
    live = sign_grant(lab.consent_authority(node), pseudonym, grant)
    stranger = Authority(Ed25519PrivateKey.generate(), "a forger's key")
    now = datetime.now(UTC)
    forgeries = [
        ControlMessage(ControlType.ERASURE_REQUESTED, pseudonym, collector_id, now, "forged"),
        ControlMessage(
            ControlType.ERASURE_REQUESTED, pseudonym, collector_id, now, "forged", grant, live
        ),
        ControlMessage(
            ControlType.CONSENT_GRANTED,
            bytes(32),
            collector_id,
            now,
            "forged",
            replace(grant, participant_id=bytes(32).hex()),
            sign_grant(stranger, bytes(32), grant),
        ),
    ]
    before = int(_sink_status(lab, storage).get("refused_control_messages", 0))
    producer = Producer(producer_config(bootstrap, f"validation-forger-{collector_id}"))
    for message in forgeries:
        producer.produce(str(config["control_topic"]), value=message.encode(), key=message.key)
    if producer.flush(30):
        raise HostEnvironmentError("the forged control messages were not acknowledged")
    try:
        status = _wait(
            "the sink to refuse 3 forged control messages",
            lambda: (
                (st := _sink_status(lab, storage))["refused_control_messages"] >= before + 3 and st
            ),
            60,
        )
    except HostEnvironmentError as exc:
        status = {"refused_control_messages": before, "last_refused_control_message": str(exc)}
    refused = int(status["refused_control_messages"]) - before
    kept = lab.run(storage, f"find {root}/segments -maxdepth 1 -name '{prefix}*' | wc -l", 30)
    stones = lab.run(storage, f"ls {root}/tombstones/ 2>/dev/null | grep -c '^{prefix}'", 30)
    intact = kept.stdout.strip() != "0" and stones.stdout.strip() == "0"
    return Result(
        SUITE,
        "forged-control-refused",
        storage,
        "pass" if refused == 3 and intact else "fail",
        value=refused,
        target=3,
        unit="messages",
        tool="capturelab sink status",
        detail=f"unsigned erasure, live grant as erasure, untrusted grant; data of {prefix}... "
        f"{'kept, no tombstone' if intact else 'TOUCHED'}; last: "
        f"{status.get('last_refused_control_message', '')[:160]}",
    )


FORGED_SEQ = 10**12  # far above any real collector's sequences: stored, they would stand out


def _forged_frames(lab: Lab, node: str, storage: str, *, pseudonym: bytes) -> Result:
    """Frames sent through the gateway as a rooted collector could, under ``node``'s collector
    id and for its live, granted participant: one unsigned, one signed by a key nobody
    certified, one signed by a key the authority certified for another collector; and one
    frame signed by a properly certified key for a participant who never consented. The sink
    must quarantine the first three and keep none of the four (counted; none stored)."""
    gateway = _forger_gateway(lab, storage, "forged-frames-refused")
    if isinstance(gateway, Result):
        return gateway
    config, bootstrap = gateway
    root = str(config["root"])
    collector_id = str(_status(lab, node)["collector_id"])
    forger = f"validation-forger-{uuid.uuid4().hex[:8]}"
    certified = identity.CollectorKey(Ed25519PrivateKey.generate(), forger)
    stranger = identity.CollectorKey(Ed25519PrivateKey.generate(), "a key nobody certified")
    now = datetime.now(UTC).replace(microsecond=0)
    cert = identity.certify(lab.consent_authority(node), forger, certified.public, now)

    def batch(cid: str, who: bytes, first: int) -> Batch:
        wall = time.time_ns()
        events = tuple(
            InputEvent(first + i, i, wall + i, DeviceClass.MOUSE, 2, 0, 1) for i in range(5)
        )
        return Batch(cid, who, events)

    frames = [
        encode_batch(batch(collector_id, pseudonym, FORGED_SEQ)),
        encode_batch(batch(collector_id, pseudonym, FORGED_SEQ + 5), signer=stranger.sign_frame),
        encode_batch(batch(collector_id, pseudonym, FORGED_SEQ + 10), signer=certified.sign_frame),
        encode_batch(batch(forger, bytes(32), 0), signer=certified.sign_frame),
    ]
    before = _sink_status(lab, storage)["counters"]
    producer = Producer(producer_config(bootstrap, forger))
    producer.produce(str(config["control_topic"]), value=identity.control_value(cert),
                     key=identity.control_key(cert))  # fmt: skip
    if producer.flush(30):
        raise HostEnvironmentError("the forger's certificate was not acknowledged")
    for data, key in zip(frames, [collector_id] * 3 + [forger], strict=True):
        producer.produce(str(config["capture_topic"]), value=data, key=key.encode())
    if producer.flush(30):
        raise HostEnvironmentError("the forged frames were not acknowledged")

    def judged() -> dict[str, Any] | None:
        counters: dict[str, Any] = _sink_status(lab, storage)["counters"]
        done = counters["unauthenticated"] - before["unauthenticated"] >= 3
        return counters if done and counters["ungranted"] > before["ungranted"] else None

    try:
        after = _wait("the sink to judge 4 forged frames", judged, 90)
    except HostEnvironmentError:
        after = _sink_status(lab, storage)["counters"]
    quarantined = after["unauthenticated"] - before["unauthenticated"]
    ungranted = after["ungranted"] - before["ungranted"]
    stored = sink_window(lab, storage, root, collector_id, (FORGED_SEQ, FORGED_SEQ + 14))
    stored_forger = sink_window(lab, storage, root, forger, (0, 4))
    kept = int(stored["stored"]) + int(stored_forger["stored"])
    ok = quarantined == 3 and ungranted == 1 and kept == 0
    return Result(
        SUITE,
        "forged-frames-refused",
        storage,
        "pass" if ok else "fail",
        value=quarantined + ungranted,
        target=4,
        unit="frames",
        tool="capturelab sink status + sink verify",
        detail=f"under {collector_id}'s id: unsigned, uncertified key, another collector's key "
        f"-> {quarantined} quarantined; a certified key for an ungranted participant -> "
        f"{ungranted} not kept; {kept} of their events stored",
    )


def _refuses_altered(lab: Lab, node: str, original: str) -> Result:
    """The collector's own record with one byte of its expiry changed: refused, still running."""
    pid = lab.run(node, "systemctl show -p MainPID --value capturelab-collector", 30).stdout.strip()
    expires = next(line for line in original.splitlines() if line.startswith("expires:"))
    digit = next(i for i in range(len(expires) - 1, 0, -1) if expires[i].isdigit())
    changed = expires[:digit] + str((int(expires[digit]) + 1) % 10) + expires[digit + 1 :]
    _write_consent(lab, node, original.replace(expires, changed).rstrip("\n"))
    # The daemon is already refusing (the revoked record just before): wait for it to refuse
    # *this* record, by its reason, or the check would read the revocation's refusal.
    try:
        state = _wait(
            f"{node} to refuse the altered record",
            lambda: (
                (st := _status(lab, node))["state"] == "refused"
                and "signature does not match" in st["reason"]
                and st
            ),
            30,
        )
    except HostEnvironmentError:
        state = _status(lab, node)  # the result fails below, with the reason the daemon gives
    after = lab.run(
        node, "systemctl show -p MainPID --value capturelab-collector", 30
    ).stdout.strip()
    refused = "signature does not match" in state["reason"] and pid == after and pid != "0"
    return Result(
        SUITE,
        "altered-consent-refused",
        node,
        "pass" if refused else "fail",
        value=state["state"],
        target="refused, same process",
        tool="capturelab collector status",
        detail=f"{state['reason'][:300]} (daemon pid {pid} before, {after} after)",
    )


def test_dataset_has_no_canary(lab: Lab, record: Any, e2e: Run, evidence: dict[str, Any]) -> None:
    _gate(e2e, record, "dataset-no-canary")
    storage = lab.nodes("storage")[0]
    root = str(read_yaml(lab, storage, "/etc/capturelab/sink.yml")["root"])
    out_dir = "/srv/capturelab/datasets"
    e2e.failed = "dataset"
    start = time.time()
    built = run_json(
        lab,
        storage,
        f"mkdir -p {out_dir} && {lab.capturelab(storage)} dataset build --store {root} "
        f"--out {out_dir} --json",
        900,
    )
    e2e.stage("dataset", start)
    e2e.dataset = built
    card = built["card"]
    evidence["redaction_findings"] = e2e.edge_findings | {
        f"dataset: {k}": n for k, n in card.get("redaction_findings", {}).items()
    }
    evidence["dataset"] = {"id": card["dataset_id"], "counts": card["counts"]}
    path = shlex.quote(built["path"])
    patterns = " ".join(f"-e {shlex.quote(c)}" for c in e2e.canaries)
    hits = lab.run(storage, f"grep -rlF {patterns} {path} | wc -l", 60) if e2e.canaries else None
    control = " ".join(f"-e {shlex.quote(p)}" for p in PHRASES)
    typed = lab.run(storage, f"grep -rhoF {control} {path} | wc -l", 60)
    examples = sum(card["counts"]["examples"].values())
    found = int(hits.stdout.strip()) if hits is not None else -1
    leaked = int(card.get("excluded", {}).get("an excluded window had focus", 0))
    marked = lab.run(storage, f"grep -rhoF 'excluded\\n' {path} | wc -l", 60)
    marks = int(marked.stdout.strip() or 0)
    planted = sorted(set(e2e.canary_kinds))
    results = [
        Result(
            SUITE,
            "canaries-cover-every-kind",
            "lab",
            "pass" if set(CANARY_KINDS) <= set(planted) else "fail",
            value=len(planted),
            target=len(CANARY_KINDS),
            unit="kinds",
            tool="capturelab synth --manifest",
            detail=f"planted: {', '.join(planted) or 'none'} (a longer validation_e2e_seconds "
            "plants more)",
        ),
        Result(
            SUITE,
            "dataset-built",
            storage,
            "pass" if examples > 0 else "fail",
            value=examples,
            target=">0",
            unit="examples",
            tool="capturelab dataset build",
            detail=f"dataset {card['dataset_id'][:16]}: {card['counts']['events_kept']} events "
            f"kept of {card['counts']['events_read']}",
        ),
        Result(
            SUITE,
            "dataset-no-canary",
            storage,
            "pass" if found == 0 else "fail",
            value=found,
            target=0,
            unit="files",
            tool="grep -F on the dataset",
            detail=f"{len(e2e.canaries)} canaries planted by synth "
            f"({', '.join(sorted(set(e2e.canary_kinds)))}); redacted: {e2e.edge_findings or 'none'} at "
            f"the edge, {card.get('redaction_findings') or 'none'} in the builder"
            if e2e.canaries
            else "synth planted no canary: nothing to look for",
        ),
        Result(
            SUITE,
            "dataset-excluded-spans-empty",
            storage,
            "pass" if marks > 0 and leaked == 0 else "fail",
            value=leaked,
            target=0,
            unit="events",
            tool="capturelab dataset build (card)",
            detail=f"{marks} excluded-window marks in the dataset; stored events that followed "
            f"a mark before the next window: {leaked} (the builder drops and counts them)"
            + ("" if marks else "; no mark at all: did synth plant its excluded_window canary?"),
        ),
        Result(
            SUITE,
            "dataset-holds-typed-text",
            storage,
            "pass" if int(typed.stdout.strip() or 0) > 0 else "fail",
            value=int(typed.stdout.strip() or 0),
            target=">0",
            unit="matches",
            tool="grep -F on the dataset",
            detail="ordinary phrases synth typed are there, so the canary check can fail",
        ),
    ]
    record(*results)
    assert_passed(results)
    e2e.failed = None


def test_finetune_ran(lab: Lab, record: Any, e2e: Run, evidence: dict[str, Any]) -> None:
    _gate(e2e, record, "finetune-metrics")
    gpus = lab.nodes("processing")
    if not gpus:
        result = Result(
            SUITE,
            "finetune-metrics",
            "lab",
            "skip",
            tool="pytest",
            detail="no processing node selected",
        )
        record(result)
        pytest.skip(result.detail)
    node = gpus[0]
    steps = int(lab.var(node, "validation_finetune_steps", 20))
    e2e.failed = "finetune"
    start = time.time()
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(lab.inventory),
            str(REPO / "playbooks/finetune.yml"),
            "-e",
            f"finetune_steps={steps}",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env=env,
    )
    e2e.stage("finetune", start)
    if proc.returncode != 0:
        raise HostEnvironmentError(
            f"playbooks/finetune.yml exited {proc.returncode}: {proc.stdout[-1500:]}"
        )
    runs = lab.var(node, "processing_node_runs_dir", "/srv/capturelab/runs")
    metrics = run_json(lab, node, f"cat {runs}/latest/metrics.json", 60)
    loss = [float(x) for x in metrics.get("train", {}).get("loss_curve", [])]
    evidence["loss_curve"] = loss
    evidence["finetune"] = {"eval": metrics.get("eval"), "dataset_id": metrics.get("dataset_id")}
    same = metrics.get("dataset_id") == e2e.dataset.get("card", {}).get("dataset_id")
    finite = len(loss) == steps and all(math.isfinite(x) for x in loss)
    results = [
        Result(
            SUITE,
            "finetune-metrics",
            node,
            "pass" if same and finite else "fail",
            value=len(loss),
            target=steps,
            unit="steps",
            tool="capturelab train run",
            detail=f"metrics.json of dataset {str(metrics.get('dataset_id'))[:16]} "
            f"({'this run' if same else 'NOT this run'}'s dataset); loss "
            f"{loss[0] if loss else '-'} -> {loss[-1] if loss else '-'}; eval "
            f"{json.dumps(metrics.get('eval'))[:200]}",
        ),
    ]
    record(*results)
    assert_passed(results)
    e2e.failed = None
