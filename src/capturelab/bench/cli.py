"""``capturelab bench <tier>``: each prints a table and writes the result JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from capturelab.bench import gateway
from capturelab.bench.result import build_result, median_by, write_result
from capturelab.errors import InputError
from capturelab.transport import producer_config

TARGET_RATIO = 0.9
DEFAULT_LIBS = Path(os.environ.get("HOME", "/root")) / ".cache/capturelab/kafka/4.1.1-maven/libs"


def cmd_gateway(args: argparse.Namespace) -> int:
    if not 1 <= args.records <= 10_000_000:
        raise InputError(f"--records must be 1..10,000,000, got {args.records}")
    if not 1 <= args.rounds <= 9:
        raise InputError(f"--rounds must be 1..9, got {args.rounds}")
    config = producer_config(args.bootstrap, client_id="capturelab-bench")
    frames = gateway.synthetic_frames(args.record_size)
    topic = gateway.create_topic(args.bootstrap, args.partitions)
    refs, ours = [], []
    try:
        for _ in range(args.rounds):
            refs.append(
                gateway.run_reference(
                    Path(args.kafka_libs),
                    config,
                    topic,
                    records=args.records,
                    record_size=len(frames[0]),
                    timeout=args.timeout,
                ).to_dict()
            )
            ours.append(
                gateway.run_ours(config, topic, args.records, frames, args.timeout).to_dict()
            )
    finally:
        gateway.delete_topic(args.bootstrap, topic)
    ref, own = median_by(refs, "records_per_s"), median_by(ours, "records_per_s")
    ratio = {
        "records_per_s": own["records_per_s"] / ref["records_per_s"],
        "mb_per_s": own["mb_per_s"] / ref["mb_per_s"],
    }
    result = build_result(
        "gateway",
        reference=ref,
        ours=own,
        ratio=ratio,
        notes=[
            f"median of {args.rounds} alternating rounds each; same broker, fresh topic with "
            f"{args.partitions} partitions, same producer settings (capturelab.transport)",
            f"ours sends real frames ({len(frames)} distinct, zstd, ~{len(frames[0])} bytes); the "
            "reference sends random bytes of the same size",
            "MB/s are MiB/s, as ProducerPerformance counts them",
            f"target: ratio >= {TARGET_RATIO}",
        ],
        extra={
            "bootstrap": args.bootstrap,
            "target_ratio": TARGET_RATIO,
            "met": ratio["records_per_s"] >= TARGET_RATIO,
            "rounds": {"reference": refs, "ours": ours},
        },
    )
    path = write_result(result, Path(args.out) if args.out else None, Path("reports/bench"))
    print(f"{'':<12}{'records/s':>12}{'MiB/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, m in (("kafka tool", ref), ("capturelab", own)):
        print(
            f"{name:<12}{m['records_per_s']:>12,.0f}{m['mb_per_s']:>10.2f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}"
        )
    print(
        f"ratio ours/kafka-tool: {ratio['records_per_s']:.2f} (records/s), target >= {TARGET_RATIO}"
    )
    print(f"result: {path}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks against a reference tool, JSON out")
    tiers = bench.add_subparsers(dest="bench_tier", metavar="TIER", required=True)
    p = tiers.add_parser("gateway", help="Kafka ProducerPerformance vs capturelab's producer path")
    p.add_argument(
        "--bootstrap", required=True, help="host:port of the broker (lab addresses only)"
    )
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument(
        "--record-size", type=int, default=4096, help="bytes per record (our frames match it)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument(
        "--kafka-libs", default=str(DEFAULT_LIBS), help="Kafka jars (the kafka role's cache)"
    )
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed per step")
    p.add_argument("--out", help="result JSON path (default reports/bench/gateway-<time>.json)")
    p.set_defaults(handler=cmd_gateway)
