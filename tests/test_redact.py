"""The shared redaction function: recognisers, offsets, overlaps, the CLI, measured quality."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from capturelab.errors import InputError
from capturelab.redact import Finding, find, redact
from capturelab.redact_cli import evaluate, redact_stream

DATA = Path(__file__).parent / "data"


def test_replacement_and_input_offsets():
    text = "mail alice@example.org, password: hunter2"
    out, findings = redact(text)
    assert out == "mail [EMAIL], password: [PASSWORD]"
    assert [text[f.start : f.end] for f in findings] == ["alice@example.org", "hunter2"]


def test_checksums_decide_cards_and_ibans():
    assert find("4111 1111 1111 1111") == [Finding(0, 19, "CARD")]
    assert find("4111 1111 1111 1112") == [], "fails Luhn"
    assert [f.kind for f in find("GB82 WEST 1234 5698 7654 32")] == ["IBAN"]
    assert find("GB82 WEST 1234 5698 7654 33") == [], "fails mod-97"


def test_overlaps_keep_the_stronger_kind():
    # The JWT's segments are also high-entropy tokens: one JWT finding, not three secrets.
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert [f.kind for f in find(f"token {jwt}")] == ["JWT"]
    assert [f.kind for f in find("password: AKIAIOSFODNN7EXAMPLE")] == ["API_KEY"]


def test_ordinary_text_is_left_alone():
    for text in (
        "The build took 14 minutes on 2026-11-22.",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "see /usr/lib/python3/dist-packages/apt/__init__.py",
    ):
        assert redact(text) == (text, [])


def test_cli_stream_and_errors():
    out = io.StringIO()
    n = redact_stream(io.StringIO('{"text": "ip 10.1.2.3"}\n\n{"text": "nothing here"}\n'), out)
    assert n == 2
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0] == {"text": "ip [IP]", "findings": [{"kind": "IP", "start": 3, "end": 11}]}
    assert lines[1]["findings"] == []
    with pytest.raises(
        InputError, match=r"stdin:2: expected an object with a string field \"text\""
    ):
        redact_stream(io.StringIO('{"text": "a"}\n{"txt": "b"}\n'), io.StringIO())


def test_console_script(tool_env: dict[str, str]):
    res = subprocess.run(
        ["capturelab", "redact"],
        input='{"text": "card 4111111111111111"}\n',
        env=tool_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(res.stdout)["text"] == "card [CARD]"


def test_quality_on_the_tuning_set():
    report = evaluate(DATA / "redaction_labelled.jsonl")
    assert report["examples"] >= 50
    assert report["overall"]["precision"] >= 0.97
    assert report["overall"]["recall"] >= 0.97


def test_quality_on_the_held_out_set():
    """Written after tuning and measured once (precision 1.00, recall 0.89, char coverage 0.95).

    The thresholds sit just under that first measurement, so a regression fails here; the two
    known misses (a phone number with a one-digit group, a passphrase prompt naming a quoted key
    path) are the next cases for the tuning set.
    """
    report = evaluate(DATA / "redaction_heldout.jsonl")
    assert report["overall"]["precision"] >= 0.95
    assert report["overall"]["recall"] >= 0.85
    assert report["char_coverage"] >= 0.9
