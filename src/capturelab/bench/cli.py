"""``capturelab bench <tier>``: each prints a table and writes the result JSON."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from capturelab.bench import collector, gateway, storage
from capturelab.bench.result import build_result, median_by, write_result
from capturelab.errors import InputError
from capturelab.sink.config import DIRECT_IO_MODES
from capturelab.train import cli as train_cli
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
    if not 0 <= args.settle_s <= 60:
        raise InputError(f"--settle-s must be 0..60, got {args.settle_s}")
    if not 1 <= args.ceiling_workers <= 16:
        raise InputError(f"--ceiling-workers must be 1..16, got {args.ceiling_workers}")
    path = Path(args.path)
    settings = storage.FioSettings(args.block_kib, args.iodepth, args.jobs, not args.buffered)
    frames = storage.sink_frames(args.size_mib, args.frame_kib)
    refs, ours, ceilings, modes = [], [], [], set()
    direct_io = DIRECT_IO_MODES[args.sink_io]
    for _ in range(args.rounds):
        storage.settle(args.settle_s)
        refs.append(storage.run_fio(path, args.size_mib, settings, args.timeout).to_dict())
        storage.settle(args.settle_s)
        sink, mode = storage.run_sink(path, frames, args.flush_every, direct_io)
        ours.append(sink.to_dict())
        modes.add(mode)
        storage.settle(args.settle_s)
        ceilings.append(
            storage.run_ceiling(
                path, frames, args.flush_every, direct_io, args.ceiling_workers
            ).to_dict()
        )
    ref, own = median_by(refs, "mib_per_s"), median_by(ours, "mib_per_s")
    ceiling = median_by(ceilings, "mib_per_s")
    ratio = {"mib_per_s": own["mib_per_s"] / ref["mib_per_s"]}
    ceiling_ratio = ceiling["mib_per_s"] / ref["mib_per_s"]
    result = build_result(
        "storage",
        reference={**ref, "tool": "fio", "settings": storage.settings_dict(settings)},
        ours={
            **own,
            "tool": "capturelab sink (SegmentStore)",
            "frame_bytes": len(frames[0]),
            "flush_every": args.flush_every,
            "write_mode": "/".join(sorted(modes)),
            "sink_io": args.sink_io,
        },
        ratio=ratio,
        notes=[
            f"median of {args.rounds} alternating rounds; {args.size_mib} MiB each, same volume; "
            f"sync + {args.settle_s} s pause before every run (the other side's writeback settles)",
            "fio: sequential write, end_fsync=1; ours: real zstd frames appended with an fsync "
            f"and index write every {args.flush_every} frames (as between offset commits)",
            f"target: ratio >= {STORAGE_TARGET_RATIO}",
            "ceiling: the same frames through the sink's appender with only the CRC32C check in "
            "front (no parsing, dedup or index): the most a checking sink gets from this CPU; "
            "ceiling_ratio below the target means no such sink meets it on this machine",
        ],
        extra={
            "path": str(path),
            "geometry": storage.geometry(path),
            "target_ratio": STORAGE_TARGET_RATIO,
            "met": ratio["mib_per_s"] >= STORAGE_TARGET_RATIO,
            "ceiling": {
                **ceiling,
                "tool": "CRC32C check + the sink's appender",
                "workers": args.ceiling_workers,
            },
            "ceiling_ratio": ceiling_ratio,
            "sink_of_ceiling": own["mib_per_s"] / ceiling["mib_per_s"],
            "rounds": {"reference": refs, "ours": ours, "ceiling": ceilings},
        },
    )
    out = write_result(result, Path(args.out) if args.out else None, Path("reports/bench"))
    print(f"{'':<12}{'MiB/s':>10}{'seconds':>10}")
    print(f"sink writes: {'/'.join(sorted(modes))}")
    for name, m in (("fio", ref), ("capturelab", own), ("ceiling", ceiling)):
        print(f"{name:<12}{m['mib_per_s']:>10.1f}{m['seconds']:>10.2f}")
    print(f"ratio ours/fio: {ratio['mib_per_s']:.2f}, target >= {STORAGE_TARGET_RATIO}")
    print(f"ratio ceiling/fio: {ceiling_ratio:.2f} (the most a sink that checks CRCs gets here)")
    print(f"result: {out}")
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    if not 5 <= args.seconds <= 3600:
        raise InputError(f"--seconds must be 5..3600, got {args.seconds}")
    if not 10 <= args.mouse_hz <= 8000:
        raise InputError(f"--mouse-hz must be 10..8000, got {args.mouse_hz}")
    if not 1 <= args.rounds <= 9:
        raise InputError(f"--rounds must be 1..9, got {args.rounds}")
    if not 10 <= args.batch_ms <= 60_000:
        raise InputError(f"--batch-ms must be 10..60000, got {args.batch_ms}")
    reads, session_s, peak = collector.session_stream(
        args.seconds, args.mouse_hz, args.seed, args.batch_ms, busy=args.profile == "busy"
    )
    scopes = collector.SCOPES[args.scopes]
    rule = collector.SealRule(args.batch_min_events, max(1, args.batch_max_ms // args.batch_ms))
    refs, ours = [], []
    for _ in range(args.rounds):
        refs.append(collector.run_reference(reads, args.level, args.bootstrap, rule).to_dict())
        ours.append(collector.run_ours(reads, scopes, args.level, args.bootstrap, rule).to_dict())
    ref, own = median_by(refs, "cpu_s"), median_by(ours, "cpu_s")
    share = own["cpu_s"] / session_s
    peak_share = own["cpu_s"] / own["events"] * peak
    ratio = {
        "cpu_s": own["cpu_s"] / ref["cpu_s"],
        "sent_bytes": own["sent_bytes"] / ref["sent_bytes"],
    }
    met = {
        "compression_ratio": own["compression_ratio"] >= collector.TARGET_COMPRESSION,
        "cpu_share_of_one_core": share < collector.TARGET_CPU_SHARE,
        "cpu_share_at_peak_second": peak_share < collector.TARGET_CPU_SHARE,
    }
    result = build_result(
        "collector",
        reference={**ref, "tool": "raw evdev records, zstd per batch, same producer"},
        ours={
            **own,
            "tool": "capturelab collector path",
            "cpu_share_of_one_core": round(share, 5),
            "peak_events_per_s": peak,
            "cpu_share_at_peak_second": round(peak_share, 5),
        },
        ratio=ratio,
        notes=[
            f"median of {args.rounds} alternating rounds by CPU; session {session_s:.1f} s of "
            f"synth input ({args.profile}: about 52 WPM typing, {args.mouse_hz} Hz mouse), "
            f"scopes {args.scopes}, zstd level {args.level}",
            f"sealed as the daemon seals, on both sides: every {args.batch_ms} ms once "
            f"{args.batch_min_events} events are held, else after {args.batch_max_ms} ms",
            "cpu_share_of_one_core = our CPU seconds / the session's real length: the load a live "
            "collector would carry; cpu_share_at_peak_second applies the measured CPU per event "
            "to the session's busiest second (continuous mouse motion plus typing)",
            "compression_ratio = the kernel's 24-byte records / bytes sent (framed, compressed)",
            "producer: " + (args.bootstrap or "librdkafka mock cluster (in-process)"),
            f"targets: compression >= {collector.TARGET_COMPRESSION}x, CPU < "
            f"{collector.TARGET_CPU_SHARE:.0%} of one core",
        ],
        extra={"session_s": session_s, "met": met, "rounds": {"reference": refs, "ours": ours}},
    )
    out = write_result(result, Path(args.out) if args.out else None, Path("reports/bench"))
    print(
        f"{'':<12}{'events':>10}{'CPU s':>8}{'s/M ev':>8}{'B/ev in':>9}{'B/ev out':>9}{'ratio':>7}"
    )
    for name, m in (("raw+zstd", ref), ("capturelab", own)):
        print(
            f"{name:<12}{m['events']:>10,}{m['cpu_s']:>8.2f}{m['cpu_s_per_million_events']:>8.2f}"
            f"{m['raw_bytes_per_event']:>9.1f}{m['sent_bytes_per_event']:>9.2f}"
            f"{m['compression_ratio']:>7.1f}"
        )
    print(f"CPU at the live rate: {share:.2%} of one core, {peak_share:.2%} in the busiest second "
          f"({peak:,} events/s; target < {collector.TARGET_CPU_SHARE:.0%}); "
          f"compression {own['compression_ratio']:.1f}x (target >= {collector.TARGET_COMPRESSION:.0f}x)")  # fmt: skip
    print(f"ratio ours/reference: CPU {ratio['cpu_s']:.2f}, bytes sent {ratio['sent_bytes']:.2f}")
    print(f"result: {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from capturelab.bench import train as train_bench  # noqa: PLC0415 - torch is heavy
    from capturelab.train.run import pick_device  # noqa: PLC0415

    opts = train_cli.options_from(args)
    opts.check()
    device = pick_device(opts.device)
    with tempfile.TemporaryDirectory(prefix="capturelab-bench-train-") as work:
        figures = train_bench.bench(
            model=opts.model,
            synthetic=args.synthetic_llama,
            dataset=Path(args.dataset) if args.dataset else None,
            device=device,
            quantize=opts.quantize,
            lora=opts.lora,
            options=opts.train,
            work=Path(work),
        )
    ref, own = figures["reference"], figures["ours"]
    ratio = {
        "tokens_per_s": round(own["tokens_per_s"] / ref["tokens_per_s"], 4),
        "peak_memory": round(own["peak_memory_bytes"] / max(ref["peak_memory_bytes"], 1), 4),
    }
    result = build_result(
        "train",
        reference={**ref, "tool": "transformers Trainer (plain loop, same collator)"},
        ours={**own, "tool": "capturelab train loop"},
        ratio=ratio,
        notes=[
            f"model {figures['model']} on {figures['device_name']} ({figures['device']}, "
            f"quantize {figures['quantize']}); LoRA r={opts.lora.r} on "
            f"{','.join(opts.lora.target_modules)}",
            f"{opts.train.steps} optimizer steps of batch {opts.train.batch_size} x grad_accum "
            f"{opts.train.grad_accum}, max_seq_len {opts.train.max_seq_len}, on "
            f"{figures['examples']} examples "
            + (f"from {args.dataset}" if args.dataset else "built from synth sessions"),
            "both sides train on the same batches in the same order (the Trainer with a sequential "
            "sampler); tokens = non-padding tokens the shared collator produced; each side loads the "
            "model afresh; the reference runs first",
            "CPU peak memory is the process's resident set during each side: memory the "
            "reference freed but the allocator kept is counted again for ours",
            "a random-weight model (--synthetic-llama) measures throughput only",
        ],
        extra=figures_extra(figures),
    )
    out = write_result(result, Path(args.out) if args.out else None, Path("reports/bench"))
    print(f"{'':<14}{'tokens/s':>10}{'steps/s':>9}{'peak MiB':>10}{'loss':>8}")
    for name, m in (("HF Trainer", ref), ("capturelab", own)):
        print(
            f"{name:<14}{m['tokens_per_s']:>10.1f}{m['steps_per_s']:>9.3f}"
            f"{m['peak_memory_bytes'] / 2**20:>10.0f}{m['final_loss']:>8.3f}"
        )
    print(
        f"ratio ours/reference: tokens/s {ratio['tokens_per_s']:.2f}, peak memory {ratio['peak_memory']:.2f}"
    )
    print(f"result: {out}")
    return 0


def figures_extra(figures: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in figures.items() if k not in ("reference", "ours")}


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
        "--sink-io",
        choices=sorted(DIRECT_IO_MODES),
        default="auto",
        help="how the sink writes (its config's direct_io): auto = O_DIRECT where supported",
    )
    p.add_argument(
        "--flush-every",
        type=int,
        default=500,
        help="frames per fsync (the service's flush_max_messages)",
    )
    p.add_argument(
        "--settle-s",
        type=float,
        default=2.0,
        help="sync and pause this long before every run, so no run pays the previous one's "
        "writeback",
    )
    p.add_argument(
        "--ceiling-workers",
        type=int,
        default=1,
        help="checking writers in parallel processes for the ceiling run (as sink instances on "
        "one node), each with its share of the frames",
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per fio run")
    p.add_argument("--out", help="result JSON path (default reports/bench/storage-<time>.json)")
    p.set_defaults(handler=cmd_storage)

    p = tiers.add_parser("collector", help="the edge pipeline's CPU and compression vs raw+zstd")
    p.add_argument("--seconds", type=float, default=60, help="length of the synthetic session")
    p.add_argument("--mouse-hz", type=int, default=1000)
    p.add_argument("--scopes", choices=sorted(collector.SCOPES), default="text",
                   help="timing: keys as classes; text: key content through the scrubber")  # fmt: skip
    p.add_argument("--level", type=int, default=3, help="zstd level (the collector's default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", choices=["session", "busy"], default="session",
                   help="session: synth's mix; busy: typing on continuous mouse motion")  # fmt: skip
    p.add_argument("--batch-ms", type=int, default=1000, help="the daemon's batch_interval_ms")
    p.add_argument("--batch-min-events", type=int, default=256, help="batch_min_events")
    p.add_argument("--batch-max-ms", type=int, default=5000, help="batch_max_interval_ms")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bootstrap", default=None,
                   help="a lab broker host:port (default: librdkafka's in-process mock cluster)")  # fmt: skip
    p.add_argument("--out", help="result JSON path (default reports/bench/collector-<time>.json)")
    p.set_defaults(handler=cmd_collector)

    p = tiers.add_parser("train", help="capturelab's LoRA loop vs a plain HF Trainer, same model")
    p.add_argument("--dataset", help="a built dataset (default: one built from synth sessions)")
    p.add_argument("--synthetic-llama", choices=["7b", "tiny"], default=None,
                   help="random-weight Llama with these dimensions (throughput only)")  # fmt: skip
    p.add_argument("--out", help="result JSON path (default reports/bench/train-<time>.json)")
    train_cli.add_options(p)
    p.set_defaults(handler=cmd_train, steps=20)
