"""Person names: Presidio with capturelab's offline engine (the names extra, part of dev)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from capturelab.cli import main
from capturelab.names import _load, person_recogniser, person_spans
from capturelab.redact import redact
from capturelab.redact_cli import evaluate

DATA = Path(__file__).parent / "data"


def spans(text: str) -> list[str]:
    firsts, lasts = _load()
    words = text.replace(",", " ,").split()
    return [" ".join(words[s:e]) for s, e in person_spans(words, firsts, lasts)]


def test_rules() -> None:
    assert spans("ask Alice Smith now") == ["Alice Smith"]
    assert spans("Jennifer L. Walker signed") == ["Jennifer L. Walker"]
    assert spans("Dr Patel and Mrs Henderson") == ["Patel", "Henderson"]
    assert spans("Hi Maria , thanks") == ["Maria"]
    assert spans("Maria said hi") == []  # a bare first name without an addressing word
    assert spans("Jordan River Park") == []  # followed by a place word
    assert spans("alice smith") == []  # title case only


def test_redact_with_names_uses_presidio_offline() -> None:
    text, findings = redact("mail Alice Smith at alice@example.org", [person_recogniser()])
    assert text == "mail [PERSON] at [EMAIL]"
    assert [f.kind for f in findings] == ["PERSON", "EMAIL"]


def test_quality_does_not_drop_below_the_recorded_figures() -> None:
    recogniser = person_recogniser()
    tuning = evaluate(DATA / "redaction_names.jsonl", [recogniser])["by_kind"]["PERSON"]
    heldout = evaluate(DATA / "redaction_names_heldout.jsonl", [recogniser])["by_kind"]["PERSON"]
    assert tuning["precision"] >= 1.0 and tuning["recall"] >= 0.89, tuning
    assert heldout["precision"] >= 0.81 and heldout["recall"] >= 0.86, heldout


def test_cli_names_flag(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"text": "thanks, Kevin"}\n'))
    assert main(["redact", "--names"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "thanks, [PERSON]"
