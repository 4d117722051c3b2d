"""``capturelab redact``: JSONL ``{"text": ...}`` in, ``{"text", "findings"}`` out; or evaluate."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from capturelab.errors import InputError
from capturelab.redact import Recogniser, find, redact


def redact_stream(
    inp: TextIO, out: TextIO, source: str = "stdin", extra: Sequence[Recogniser] = ()
) -> int:
    """Redact each line; a bad line is an error naming its line number (nothing is skipped)."""
    count = 0
    for lineno, line in enumerate(inp, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}:{lineno}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'{source}:{lineno}: expected an object with a string field "text"')
        text, findings = redact(record["text"], extra)
        out.write(json.dumps({"text": text, "findings": [f.to_dict() for f in findings]}) + "\n")
        count += 1
    return count


def evaluate(path: Path, extra: Sequence[Recogniser] = ()) -> dict[str, Any]:
    """Span-level precision and recall per kind on a labelled JSONL set, plus character coverage."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    covered = total = examples = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            gold = {(s["kind"], s["start"], s["end"]) for s in item["spans"]}
            text = item["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(
                f"{path}:{lineno}: expected {{text, spans: [{{kind, start, end}}]}}: {exc}"
            ) from None
        examples += 1
        found = find(text, extra)
        pred = {(f.kind, f.start, f.end) for f in found}
        for kind, *_ in gold & pred:
            per[kind]["tp"] += 1
        for kind, *_ in pred - gold:
            per[kind]["fp"] += 1
        for kind, *_ in gold - pred:
            per[kind]["fn"] += 1
        for _, start, end in gold:
            total += end - start
            covered += sum(1 for i in range(start, end) if any(f.start <= i < f.end for f in found))

    def ratios(c: dict[str, int]) -> dict[str, Any]:
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        return {**c, "precision": round(p, 4), "recall": round(r, 4)}

    overall = {k: sum(c[k] for c in per.values()) for k in ("tp", "fp", "fn")}
    return {
        "set": str(path),
        "examples": examples,
        "overall": ratios(overall),
        "char_coverage": round(covered / total, 4) if total else 1.0,
        "by_kind": {k: ratios(v) for k, v in sorted(per.items())},
    }


def cmd_redact(args: argparse.Namespace) -> int:
    extra: list[Recogniser] = []
    if args.names:
        from capturelab.names import person_recogniser  # noqa: PLC0415 - optional extra

        extra.append(person_recogniser())
    if args.evaluate:
        print(json.dumps(evaluate(Path(args.evaluate), extra), indent=2))
        return 0
    redact_stream(sys.stdin, sys.stdout, extra=extra)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "redact", help="strip secrets and PII: JSONL {text} on stdin -> {text, findings}"
    )
    p.add_argument(
        "--evaluate", metavar="LABELLED.jsonl", help="report precision/recall on a labelled set"
    )
    p.add_argument(
        "--names",
        action="store_true",
        help="also person names (Presidio, offline engine; the names extra)",
    )
    p.set_defaults(handler=cmd_redact)
