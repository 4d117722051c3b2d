"""Throughput: the network, the gateway, the array, and a sustained ingest at the cohort's rate.

Targets come from the inventory's cohort through the planner (``capturelab.validate.targets``):
the collector links must carry one participant's share, everything behind the gateway the whole
cohort's compressed stream, both times ``validation_headroom``. Every load is bounded (iperf3 for
a few seconds, fixed record counts, a deadline) and goes only to the lab's own nodes, at the
addresses the nodes' own configurations name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, assert_passed
from nodeconfig import first_bootstrap, read_yaml, run_json, sink_window

from capturelab.results import Result
from capturelab.validate.checks import bound, parse_iperf3
from capturelab.validate.load import Admission, offer, request_erasure

SUITE = "throughput"
# Seconds this suite may take on the 2-core lab machine (its suite-time check fails past it),
# and which command runs it ("lab": make lab and make lab-full; "full": make lab-full only).
# Measured: 195.1 s (lab3), 187.2 s (lab4).
SUITE_BUDGET_S = 215
# The sustained load is offered this much above the ingest target. The load is paced, so it can
# never beat its own offer: offered at the target exactly, a last frame sent 29 ms late under a
# busy controller read 399,940 of 400,000 B/s (2026-12-07). 2 % above it, the check still fails
# where the gateway or the sink cannot take the target (sending falls 1.2 s behind in 60 s).
OFFER_MARGIN = 1.02
SUITE_PROFILE = "lab"
IPERF_PORT = 5201
IPERF_SECONDS = 5
MIB = 1024 * 1024


def _iperf(lab: Lab, client: str, server_addr: str, reverse: bool) -> tuple[float, float]:
    """One bounded iperf3 run from ``client`` to a one-off server on every gateway."""
    for gw in lab.nodes("gateways"):
        lab.run(gw, f"pkill -x iperf3; iperf3 -s -1 -D -p {IPERF_PORT}", 30)
    time.sleep(1)
    try:
        out = lab.run(
            client,
            f"iperf3 -c {server_addr} -p {IPERF_PORT} -t {IPERF_SECONDS} -J"
            + (" -R" if reverse else ""),
            IPERF_SECONDS + 60,
        )
        return parse_iperf3(out.stdout)
    finally:
        for gw in lab.nodes("gateways"):
            lab.run(gw, "pkill -x iperf3 || true", 30)


def _need(lab: Lab, tier: str) -> list[str]:
    nodes = lab.nodes(tier)
    if not nodes:
        pytest.skip(f"no {tier} node selected")
    return nodes


def _sink(lab: Lab) -> tuple[str, dict[str, Any]]:
    storage = _need(lab, "storage")[0]
    return storage, read_yaml(lab, storage, "/etc/capturelab/sink.yml")


def test_iperf3_collector_to_gateway(lab: Lab, record: Any) -> None:
    results = []
    for collector in _need(lab, "collectors"):
        config = read_yaml(lab, collector, "/etc/capturelab/collector.yml")
        gw_addr, _ = first_bootstrap(config, collector, "/etc/capturelab/collector.yml")
        rate, retransmits = _iperf(lab, collector, gw_addr, reverse=False)
        results.append(
            bound(
                SUITE,
                "iperf3-collector-to-gateway",
                collector,
                value=rate,
                target=lab.targets.collector_bytes_per_s,
                unit="B/s",
                minimum=True,
                tool=f"iperf3 -c {gw_addr} -t {IPERF_SECONDS}",
                detail=f"{rate * 8 / 1e6:.1f} Mbit/s, {retransmits:.0f} retransmits; target: "
                "one participant's compressed stream x headroom",
            )
        )
    record(*results)
    assert_passed(results)


def test_iperf3_gateway_to_storage(lab: Lab, record: Any) -> None:
    storage, config = _sink(lab)
    gw_addr, _ = first_bootstrap(config, storage, "/etc/capturelab/sink.yml")
    rate, retransmits = _iperf(lab, storage, gw_addr, reverse=True)
    result = bound(
        SUITE,
        "iperf3-gateway-to-storage",
        storage,
        value=rate,
        target=lab.targets.ingest_bytes_per_s,
        unit="B/s",
        minimum=True,
        tool=f"iperf3 -c {gw_addr} -R -t {IPERF_SECONDS}",
        detail=f"{rate * 8 / 1e6:.1f} Mbit/s (the gateway sends), {retransmits:.0f} retransmits; "
        "target: the cohort's compressed stream x headroom",
    )
    record(result)
    assert_passed([result])


def test_gateway_benchmark(lab: Lab, record: Any) -> None:
    storage, config = _sink(lab)
    if config.get("security"):
        result = Result(
            SUITE,
            "gateway-producer",
            "gateways",
            "skip",
            tool="capturelab bench gateway",
            detail="the gateway takes TLS+SASL clients only; the controller holds no "
            "producer principal (run `capturelab bench gateway` on a collector)",
        )
        record(result)
        pytest.skip(result.detail)
    host, port = first_bootstrap(config, storage, "/etc/capturelab/sink.yml")
    with tempfile.TemporaryDirectory(prefix="capturelab-validate-") as tmp:
        out = Path(tmp) / "gateway.json"
        command = [
            sys.executable,
            "-m",
            "capturelab.cli",
            "bench",
            "gateway",
            "--bootstrap",
            f"{host}:{port}",
            "--records",
            "4000",
            "--record-size",
            "16384",
            "--rounds",
            "1",
            "--timeout",
            "240",
            "--out",
            str(out),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"capturelab bench gateway exited {proc.returncode}: {proc.stderr[-500:]}"
            )
        doc = json.loads(out.read_text())
    ours = float(doc["ours"]["mb_per_s"]) * MIB
    reference = float(doc["reference"]["mb_per_s"]) * MIB
    result = bound(
        SUITE,
        "gateway-producer",
        "gateways",
        value=ours,
        target=lab.targets.ingest_bytes_per_s,
        unit="B/s",
        minimum=True,
        tool="capturelab bench gateway (4000 x 16 KiB records)",
        detail=f"Kafka ProducerPerformance {reference / MIB:.1f} MiB/s, capturelab's producer "
        f"{ours / MIB:.1f} MiB/s (ratio {ours / reference:.2f}), same broker and settings",
    )
    record(result)
    assert_passed([result])


def test_array_fio_and_sink(lab: Lab, record: Any) -> None:
    storage, config = _sink(lab)
    root = str(config["root"])
    bench_dir = f"{root}/.validation-bench"
    command = (
        f"out=$(mktemp) && mkdir -p {bench_dir} && {lab.capturelab(storage)} bench storage "
        f'--path {bench_dir} --size-mib 256 --rounds 1 --timeout 240 --out "$out" >/dev/null '
        f'&& cat "$out"; rc=$?; rm -rf {bench_dir} "$out"; exit $rc'
    )
    doc = run_json(lab, storage, command, 900)
    fio = float(doc["reference"]["mib_per_s"]) * MIB
    sink = float(doc["ours"]["mib_per_s"]) * MIB
    results = [
        bound(
            SUITE,
            "array-fio-write",
            storage,
            value=fio,
            target=lab.targets.ingest_bytes_per_s,
            unit="B/s",
            minimum=True,
            tool="fio sequential write (capturelab bench storage)",
            detail=f"256 MiB on {root}",
        ),
        bound(
            SUITE,
            "array-sink-write",
            storage,
            value=sink,
            target=lab.targets.ingest_bytes_per_s,
            unit="B/s",
            minimum=True,
            tool="the sink's write path (capturelab bench storage)",
            detail=f"256 MiB of frames with the service's fsync cadence; sink/fio ratio "
            f"{sink / fio:.2f}; ceiling (CRC32C check + the sink's appender)/fio "
            f"{float(doc['ceiling_ratio']):.2f}",
        ),
    ]
    record(*results)
    assert_passed(results)


def test_sustained_ingest_at_cohort_rate(lab: Lab, record: Any) -> None:
    storage, config = _sink(lab)
    if config.get("security"):
        result = Result(
            SUITE,
            "sustained-ingest",
            "lab",
            "skip",
            tool="capturelab.validate.load",
            detail="the gateway takes TLS+SASL clients only; the controller holds no "
            "producer principal for the load",
        )
        record(result)
        pytest.skip(result.detail)
    host, port = first_bootstrap(config, storage, "/etc/capturelab/sink.yml")
    bootstrap, root = f"{host}:{port}", str(config["root"])
    targets = lab.targets
    max_lag = float(lab.var(storage, "validation_max_lag_seconds", 30))
    run_id = uuid.uuid4().hex[:12]
    # The sink admits signed frames of granted participants only: the load announces a key the
    # authority certified and a grant for its pseudonym first (capturelab.validate.load).
    admission = Admission(
        lab.consent_authority(storage),
        str(config["control_topic"]),
        str(config.get("region", "")),
    )
    load = offer(
        bootstrap,
        str(config["capture_topic"]),
        run_id,
        targets.ingest_bytes_per_s * OFFER_MARGIN,
        targets.sustained_seconds,
        admission=admission,
    )
    deadline = load.last_sent + max_lag * 3 + 60
    window: dict[str, Any] = {}
    landed_at = None
    while time.time() < deadline:
        window = sink_window(lab, storage, root, load.collector_id, (0, load.events - 1))
        if window["stored"] >= window["expected"]:
            landed_at = time.time()
            break
        time.sleep(2)
    request_erasure(
        bootstrap,
        str(config["control_topic"]),
        run_id,
        "validation load, not a person",
        lab.consent_authority(storage),
    )
    lag = (landed_at or time.time()) - load.last_sent
    detail = (
        f"{load.frames} frames, {load.bytes:,} bytes offered at {load.offered_bytes_per_s:,.0f} B/s "
        f"for {targets.sustained_seconds:g} s ({targets.cohort.participants} participants x "
        f"{targets.cohort.kb_per_minute:g} KB/min, {targets.cohort.compression_saving:.0%} saved, "
        f"x{targets.headroom:g} headroom)"
    )
    results = [
        bound(
            SUITE,
            "sustained-ingest",
            "lab",
            value=load.achieved_bytes_per_s if landed_at else 0.0,
            target=targets.ingest_bytes_per_s,
            unit="B/s",
            minimum=True,
            tool="capturelab.validate.load -> Kafka -> sink",
            detail=detail
            + (
                ""
                if landed_at
                else f"; NOT all landed: {window.get('stored')} of {window.get('expected')} events"
            ),
        ),
        bound(
            SUITE,
            "sustained-ingest-lag",
            "lab",
            value=lag,
            target=max_lag,
            unit="s",
            minimum=False,
            tool="capturelab sink verify (polled)",
            detail="last frame sent to every event stored exactly once "
            f"({window.get('duplicates', '?')} duplicates, {len(window.get('missing', []))} gaps)",
        ),
    ]
    if window.get("duplicates"):
        results.append(
            Result(
                SUITE,
                "sustained-ingest-exactly-once",
                "lab",
                "fail",
                value=window["duplicates"],
                target=0,
                unit="events",
                tool="capturelab sink verify",
                detail="duplicates stored",
            )
        )
    record(*results)
    assert_passed(results)
