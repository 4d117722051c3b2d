"""The dataset card as Markdown: what went in, what was kept, what was removed and why."""

from __future__ import annotations

from typing import Any


def _table(title: str, rows: dict[str, Any], empty: str) -> list[str]:
    lines = [f"## {title}", ""]
    if not rows:
        return [*lines, empty, ""]
    lines += ["| | count |", "|---|---:|"]
    lines += [f"| {key} | {value:,} |" for key, value in rows.items()]
    return [*lines, ""]


def render(card: dict[str, Any]) -> str:
    counts = card["counts"]
    opts = card["options"]
    lines = [
        f"# Dataset {card['dataset_id'][:16]}",
        "",
        f"Format `{card['format']}` version {card['format_version']}, built {card['built']}.",
        f"Examples: {counts['examples']['train']:,} train, {counts['examples']['eval']:,} eval "
        f"(from {counts['sessions']['train']:,} and {counts['sessions']['eval']:,} sessions of "
        f"{counts['pseudonyms']:,} pseudonymous participants). Each example: up to "
        f"{opts['history']} recent actions and the focused window; target: the next "
        f"{opts['horizon']} actions.",
        "",
        f"Events read: {counts['events_read']:,} from {counts['frames_read']:,} frames; kept: "
        f"{counts['events_kept']:,}; duplicates ignored: {counts['duplicate_events']:,}; key "
        f"events reduced to their class (no keys:text grant): "
        f"{counts['key_events_reduced_to_class']:,}.",
        "",
        f"Consent: only grants signed by the consent authority count (trusted keys: "
        f"{', '.join(card.get('consent_authority_keys', [])) or 'none recorded'}); grants "
        f"refused: {counts.get('grants_refused', 0):,}.",
        "",
    ]
    lines += _table("Events kept by scope", card["scopes"], "None.")
    lines += _table(
        "Redaction findings by kind",
        card["redaction_findings"],
        "None found (the edge may have removed them first).",
    )
    lines += _table("Excluded events and why", card["excluded"], "Nothing was excluded.")
    lines += _table("Corrupt frames (skipped)", card["corrupt_frames"], "None.")
    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | `{digest}` |" for name, digest in card["files"].items()]
    return "\n".join(lines) + "\n"
