"""``capturelab sink run|status|verify|erase|expire``."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capturelab.errors import InputError
from capturelab.schema import load_dictionary
from capturelab.sink.audit import CollectorAudit, audit
from capturelab.sink.config import load_config
from capturelab.sink.erasure import Tombstones, expire
from capturelab.sink.layout import Layout, check_pseudonym

DEFAULT_CONFIG = Path("/etc/capturelab/sink.yml")


def cmd_run(args: argparse.Namespace) -> int:
    from capturelab.sink.service import SinkService  # noqa: PLC0415 - only `run` needs librdkafka

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    SinkService(config).run(max_seconds=args.max_seconds)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        doc: dict[str, Any] = json.loads(config.status_path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{config.status_path} does not exist: the sink has not run with {args.config}"
        ) from None
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    counters = doc.get("counters", {})
    rows = [
        ("state", f"{doc['state']}{': ' + doc['reason'] if doc.get('reason') else ''}"),
        ("updated", doc["updated"]),
        ("assigned", ", ".join(doc.get("assigned", [])) or "-"),
        ("lag (messages)", str(doc.get("total_lag", 0))),
        ("last commit", doc.get("last_commit") or "-"),
        ("batches / events stored", f"{counters.get('batches', 0)} / {counters.get('events', 0)}"),
        ("bytes written", str(counters.get("bytes_written", 0))),
        ("segment writes", doc.get("write_mode", "-")),
        ("duplicates skipped", str(counters.get("duplicates", 0))),
        ("quarantined batches", str(counters.get("quarantined", 0))),
        ("erased (discarded)", str(counters.get("erased", 0))),
        (
            "frames refused (grant refused)",
            f"{counters.get('refused', 0)} of {doc.get('refused_participants', 0)} participant(s)",
        ),
        (
            "frames not authenticated",
            f"{counters.get('unauthenticated', 0)} (quarantined, "
            f"{counters.get('forged_not_kept', 0)} over the day's allowance only counted; "
            "collector keys held: "
            f"{doc.get('collector_keys', 0)}; required: {doc.get('require_collector_auth', '-')})",
        ),
        (
            "frames without a grant",
            f"{counters.get('ungranted', 0)} (not kept; required: {doc.get('require_grant', '-')})",
        ),
        ("erasures / tombstones", f"{doc.get('erasures', 0)} / {doc.get('tombstones', 0)}"),
        (
            "control messages refused",
            f"{doc.get('refused_control_messages', 0)}"
            + (
                f" (last: {doc['last_refused_control_message']})"
                if doc.get("last_refused_control_message")
                else ""
            ),
        ),
        (
            "control read up to",
            ", ".join(f"{p}:{o}" for p, o in doc.get("control_next", {}).items()) or "-",
        ),
        ("free bytes (reserve)", f"{doc.get('free_bytes')} ({doc.get('min_free_bytes')})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if not Layout(args.root).segments.is_dir():
        raise InputError(
            f"--root {args.root}: not a sink root (no segments/ folder): a wrong path, "
            "or the sink never ran there"
        )
    dictionaries = {d.dict_id(): d for d in map(load_dictionary, args.dictionary)}
    result = audit(args.root, frames=args.frames, dictionaries=dictionaries)
    doc = result.to_dict()
    if args.collector is not None:
        if (args.seq_from is None) != (args.seq_to is None) or (
            args.seq_from is not None and not 0 <= args.seq_from <= args.seq_to
        ):
            raise InputError("--seq-from and --seq-to go together, with 0 <= from <= to")
        found = result.collectors.get(args.collector, CollectorAudit())
        lo = args.seq_from if args.seq_from is not None else 0
        hi = args.seq_to
        if hi is None:  # no window: the collector's whole range from 0
            hi = max((e for _, e in found.intervals), default=lo)
        window = found.window(lo, hi)
        window["collector"] = args.collector
        doc["window"] = window
        if args.json:
            print(json.dumps(doc, indent=1, sort_keys=True))
        else:
            print(
                f"{args.collector} seq {lo}..{hi}: {window['stored']} of {window['expected']} stored, "
                f"{len(window['missing'])} missing ranges, {window['duplicates']} duplicates"
            )
        return 0 if not window["missing"] and not window["duplicates"] else 1
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        for cid, c in doc["collectors"].items():
            gaps = f"{len(c['gaps'])} gaps" if c["gaps"] else "no gap"
            print(
                f"{cid}: {c['events']} events in {c['batches']} batches, seq "
                f"{c['first_seq']}..{c['last_seq']}, {gaps}, {c['duplicates']} duplicates"
            )
        for bad in doc["bad_frames"]:
            print(f"bad frame: {bad}")
        print(f"{'ok' if doc['ok'] else 'NOT OK'}: {doc['events']} events, {doc['bytes']} bytes")
    return 0 if result.ok() else 1


def cmd_erase(args: argparse.Namespace) -> int:
    layout = Layout(args.root)
    stone = Tombstones(layout).erase(
        check_pseudonym(args.pseudonym), datetime.now(UTC), args.reason
    )
    print(
        f"erased {stone.pseudonym}: {stone.events_removed} events, {stone.files_removed} files; "
        f"tombstone {layout.tombstones / (stone.pseudonym + '.json')}"
    )
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    gone = expire(Layout(config.root), datetime.now(UTC), config.retention_days)
    print(
        f"retention {config.retention_days} days: removed {gone.files_removed} files, "
        f"{gone.events_removed} events"
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Read a sink config as the daemon would (the role validates each render with this)."""
    load_config(args.path)
    print(f"{args.path}: a valid sink config")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sink", help="the storage node's sink: land batches exactly once")
    ss = p.add_subparsers(dest="sink_command", metavar="ACTION", required=True)

    check = ss.add_parser(
        "check-config", help="read a config as the daemon would; exit 2 names the field"
    )
    check.add_argument("path", type=Path)
    check.set_defaults(handler=cmd_check_config)
    run = ss.add_parser("run", help="consume the capture and control topics (the service)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--max-seconds", type=float, help="stop after this long (tests)")
    run.set_defaults(handler=cmd_run)

    status = ss.add_parser("status", help="lag, bytes written, quarantined batches, pause state")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    verify = ss.add_parser("verify", help="prove no loss (gaps) and no duplicate per collector")
    verify.add_argument("--root", type=Path, required=True, help="the sink's root (array mount)")
    verify.add_argument(
        "--frames", action="store_true", help="also read back and decode every frame"
    )
    verify.add_argument(
        "--dictionary", type=Path, action="append", default=[],
        help="zstd dictionary the collectors used (sink.yml's dictionaries), for --frames",
    )  # fmt: skip
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--collector", help="only this collector's sequences (with a window)")
    verify.add_argument("--seq-from", type=int, help="first sequence of the window (inclusive)")
    verify.add_argument("--seq-to", type=int, help="last sequence of the window (inclusive)")
    verify.set_defaults(handler=cmd_verify)

    erase = ss.add_parser(
        "erase", help="erase a pseudonym while the sink is stopped (live: the control topic)"
    )
    erase.add_argument("--root", type=Path, required=True)
    erase.add_argument("--pseudonym", required=True, help="64 hex characters")
    erase.add_argument("--reason", default="erasure_requested")
    erase.set_defaults(handler=cmd_erase)

    exp = ss.add_parser("expire", help="apply the retention now")
    exp.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    exp.set_defaults(handler=cmd_expire)
