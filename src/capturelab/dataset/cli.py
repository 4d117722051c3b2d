"""``capturelab dataset build|verify``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from capturelab.dataset.build import DEFAULT_TRUST, BuildOptions, build, verify


def cmd_build(args: argparse.Namespace) -> int:
    options = BuildOptions(
        history=args.history,
        horizon=args.horizon,
        min_history=args.min_history,
        eval_fraction=args.eval_fraction,
        session_gap_s=args.session_gap_s,
        names=args.names,
        dictionaries=tuple(args.dictionary),
        trust_file=args.trust,
        region=args.region.strip().lower(),
        excluded_regions=tuple(args.excluded_regions),
        lawful_basis_override=args.lawful_basis_override.strip().lower(),
    )
    built = build(args.store, args.out, options)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(built.path),
                    "reused": built.reused,
                    "refused_grants": list(built.refused_grants),
                    "card": built.card,
                },
                indent=1,
            )
        )
        return 0
    counts = built.card["counts"]
    verb = "unchanged" if built.reused else "built"
    print(
        f"dataset {verb}: {built.path} ({counts['examples']['train']} train, "
        f"{counts['examples']['eval']} eval examples; {counts['events_kept']} of "
        f"{counts['events_read']} events kept)"
    )
    for why in built.refused_grants:
        print(f"  refused grant: {why}")
    for why, n in built.card["excluded"].items():
        print(f"  excluded {n}: {why}")
    for kind, n in built.card["redaction_findings"].items():
        print(f"  redacted {n}: {kind}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    card = verify(args.path)
    print(f"dataset {card['dataset_id'][:16]}: {len(card['files'])} files match the card")
    return 0


def _regions(value: str) -> list[str]:
    return [r.strip().lower() for r in value.split(",") if r.strip()]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("dataset", help="build and verify redacted training datasets")
    dsub = parser.add_subparsers(dest="dataset_cmd", required=True)
    b = dsub.add_parser(
        "build", help="build a dataset from the sink's store (run on the storage node)"
    )
    b.add_argument("--store", type=Path, required=True, help="the sink's root on the array")
    b.add_argument("--out", type=Path, required=True, help="where versioned datasets are written")
    b.add_argument("--history", type=int, default=BuildOptions.history)
    b.add_argument("--horizon", type=int, default=BuildOptions.horizon)
    b.add_argument("--min-history", type=int, default=BuildOptions.min_history)
    b.add_argument("--eval-fraction", type=float, default=BuildOptions.eval_fraction)
    b.add_argument("--session-gap-s", type=float, default=BuildOptions.session_gap_s)
    b.add_argument("--names", action="store_true", help="also redact person names (names extra)")
    b.add_argument("--dictionary", type=Path, action="append", default=[], help="zstd dictionary")
    b.add_argument(
        "--trust",
        type=Path,
        default=DEFAULT_TRUST,
        help="the consent authority's public key(s): only grants they verify count "
        f"(default {DEFAULT_TRUST}, where the sink role puts them)",
    )
    b.add_argument("--region", default="", help="this node's region (refused if excluded)")
    b.add_argument(
        "--excluded-regions",
        type=_regions,
        default=list(BuildOptions.excluded_regions),
        help="comma separated; grants of these regions are refused (default: eu)",
    )
    b.add_argument(
        "--lawful-basis-override", default="", help="declared for this node: excluded regions pass"
    )
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=cmd_build)
    v = dsub.add_parser("verify", help="check a dataset's files against its card")
    v.add_argument("path", type=Path)
    v.set_defaults(handler=cmd_verify)
