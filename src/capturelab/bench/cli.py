"""``capturelab bench <tier>``: each prints a table and writes the result JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from capturelab.bench import gateway, storage
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


STORAGE_TARGET_RATIO = 0.8


def cmd_storage(args: argparse.Namespace) -> int:
    if not 16 <= args.size_mib <= 65536:
        raise InputError(f"--size-mib must be 16..65536, got {args.size_mib}")
    if not 1 <= args.rounds <= 9:
        raise InputError(f"--rounds must be 1..9, got {args.rounds}")
    path = Path(args.path)
    settings = storage.FioSettings(args.block_kib, args.iodepth, args.jobs, not args.buffered)
    frames = storage.sink_frames(args.size_mib, args.frame_kib)
    refs, ours = [], []
    for _ in range(args.rounds):
        refs.append(storage.run_fio(path, args.size_mib, settings, args.timeout).to_dict())
        ours.append(storage.run_sink(path, frames, args.flush_every).to_dict())
    ref, own = median_by(refs, "mib_per_s"), median_by(ours, "mib_per_s")
    ratio = {"mib_per_s": own["mib_per_s"] / ref["mib_per_s"]}
    result = build_result(
        "storage",
        reference={**ref, "tool": "fio", "settings": storage.settings_dict(settings)},
        ours={
            **own,
            "tool": "capturelab sink (SegmentStore)",
            "frame_bytes": len(frames[0]),
            "flush_every": args.flush_every,
        },
        ratio=ratio,
        notes=[
            f"median of {args.rounds} alternating rounds; {args.size_mib} MiB each, same volume",
            "fio: sequential write, end_fsync=1; ours: real zstd frames appended with an fsync "
            f"and index write every {args.flush_every} frames (as between offset commits)",
            f"target: ratio >= {STORAGE_TARGET_RATIO}",
        ],
        extra={
            "path": str(path),
            "geometry": storage.geometry(path),
            "target_ratio": STORAGE_TARGET_RATIO,
            "met": ratio["mib_per_s"] >= STORAGE_TARGET_RATIO,
            "rounds": {"reference": refs, "ours": ours},
        },
    )
    out = write_result(result, Path(args.out) if args.out else None, Path("reports/bench"))
    print(f"{'':<12}{'MiB/s':>10}{'seconds':>10}")
    for name, m in (("fio", ref), ("capturelab", own)):
        print(f"{name:<12}{m['mib_per_s']:>10.1f}{m['seconds']:>10.2f}")
    print(f"ratio ours/fio: {ratio['mib_per_s']:.2f}, target >= {STORAGE_TARGET_RATIO}")
    print(f"result: {out}")
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

    p = tiers.add_parser("storage", help="fio sequential write vs the sink's write path")
    p.add_argument("--path", required=True, help="a folder on the volume (the array's mount)")
    p.add_argument("--size-mib", type=int, default=1024, help="bytes each side writes per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block-kib", type=int, default=1024, help="fio block size")
    p.add_argument("--iodepth", type=int, default=16, help="fio iodepth")
    p.add_argument("--jobs", type=int, default=1, help="fio numjobs")
    p.add_argument("--buffered", action="store_true", help="fio without O_DIRECT")
    p.add_argument("--frame-kib", type=int, default=64, help="size of the sink's frames")
    p.add_argument(
        "--flush-every",
        type=int,
        default=500,
        help="frames per fsync (the service's flush_max_messages)",
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per fio run")
    p.add_argument("--out", help="result JSON path (default reports/bench/storage-<time>.json)")
    p.set_defaults(handler=cmd_storage)
