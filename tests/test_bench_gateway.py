"""The gateway benchmark's parts that need no broker: parsing, frames, settings, medians."""

from __future__ import annotations

import pytest

from capturelab.bench.gateway import parse_producer_performance, synthetic_frames
from capturelab.bench.result import build_result, median_by
from capturelab.errors import CapturelabError, InputError
from capturelab.schema import decode_batch, read_header
from capturelab.transport import Security, java_properties, producer_config

OUTPUT = """\
24998 records sent, 4999.6 records/sec (19.53 MB/sec), 3.1 ms avg latency, 210.0 ms max latency.
50000 records sent, 8123.456 records/sec (31.73 MB/sec), 2.87 ms avg latency, 230.00 ms max latency, \
2 ms 50th, 7 ms 95th, 19 ms 99th, 41 ms 99.9th.
"""


def test_parse_the_final_summary():
    m = parse_producer_performance(OUTPUT, 4096)
    assert m.records == 50000
    assert m.records_per_s == pytest.approx(8123.456)
    assert m.mb_per_s == pytest.approx(31.73)
    assert (m.p50_ms, m.p99_ms) == (2, 19)
    with pytest.raises(CapturelabError, match="no summary line"):
        parse_producer_performance("Exception in thread main", 4096)


def test_frames_match_the_record_size_and_decode():
    frames = synthetic_frames(4096, pool=4)
    assert len({bytes(f) for f in frames}) == 4, "distinct frames"
    for f in frames:
        assert abs(len(f) - 4096) < 200
        batch = decode_batch(f)
        assert batch.collector_id == "bench-collector"
    firsts = [read_header(f).first_seq for f in frames]
    assert firsts == sorted(firsts) and len(set(firsts)) == 4, "sequences continue across frames"
    with pytest.raises(InputError, match="--record-size 50"):
        synthetic_frames(50)


def test_producer_settings_are_durable_and_shared_with_java():
    cfg = producer_config("10.0.0.1:9092", "collector-01")
    assert cfg["acks"] == "all" and cfg["enable.idempotence"] is True
    assert cfg["compression.type"] == "none"
    props = java_properties(cfg)
    assert "enable.idempotence=true" in props and "acks=all" in props
    assert props[0] == "bootstrap.servers=10.0.0.1:9092"
    with pytest.raises(InputError, match="acks=1"):
        producer_config("x:9092", "c", overrides={"acks": 1})
    secure = producer_config("x:9094", "c", Security("collector-01", "pw", "/etc/ssl/lab-ca.pem"))
    assert secure["security.protocol"] == "SASL_SSL"
    assert "pw" not in repr(Security("collector-01", "pw", "/ca"))
    with pytest.raises(InputError, match="bootstrap servers are empty"):
        producer_config(" ", "c")


def test_median_round_and_result_shape():
    rounds = [{"records_per_s": 3.0}, {"records_per_s": 1.0}, {"records_per_s": 2.0}]
    assert median_by(rounds, "records_per_s") == {"records_per_s": 2.0}
    result = build_result(
        "gateway", reference={"a": 1}, ours={"a": 2}, ratio={"a": 2.0}, notes=["n"]
    )
    assert set(result) >= {
        "bench",
        "machine",
        "date",
        "command",
        "reference",
        "ours",
        "ratio",
        "notes",
    }
