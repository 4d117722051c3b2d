"""The dataset builder: consent filter, redaction, canaries, screenshots, corruption, versioning."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from datasetkit import HOUR_NS, T0, TRUST, edge_events, grant, land, options, raw_events

from capturelab.cli import main
from capturelab.collector.synth import _Builder, build_session
from capturelab.consent import Scope
from capturelab.dataset.build import BuildOptions, build, verify
from capturelab.dataset.example import END, NEXT_HEADER, read_examples
from capturelab.errors import InputError
from capturelab.schema import EventFlag, ImageFormat, ScreenshotEvent
from capturelab.sink.erasure import Tombstones
from capturelab.sink.layout import Layout

P1 = hashlib.sha256(b"participant-1").digest()
P2 = hashlib.sha256(b"participant-2").digest()
ALL = [Scope.KEYS_TEXT, Scope.MOUSE, Scope.CONTEXT]


def dataset_text(path: Path) -> str:
    return (path / "train.jsonl").read_text() + (path / "eval.jsonl").read_text()


@pytest.mark.parametrize("through_edge", [False, True], ids=["raw-frames", "after-the-edge"])
def test_planted_canaries_never_reach_the_dataset(tmp_path: Path, through_edge: bool) -> None:
    session = build_session(11, 300)
    assert len(session.canaries) == 5
    events = edge_events(session, ALL) if through_edge else raw_events(session)
    land(tmp_path / "store", "c1", P1, events)
    grant(tmp_path / "store", P1, ALL)
    built = build(tmp_path / "store", tmp_path / "out", options(eval_fraction=0))
    text = dataset_text(built.path)
    for canary in session.canaries:
        assert canary.value not in text, canary
        assert canary.value.replace(" ", "") not in text.replace(" ", ""), canary
    # Ordinary typing survives: the filter removes secrets, not the data.
    assert "git status" in text
    findings = built.card["redaction_findings"]
    if through_edge:  # the edge took the secrets already; their places are kept
        assert "[REDACTED]" in text
        assert "secure-input" in text  # the sudo prompt's keys, masked at the edge
    else:
        assert findings["PASSWORD"] >= 2 and findings["EMAIL"] >= 1 and findings["CARD"] >= 1
        assert "type [PASSWORD]" in text  # typed while the sudo prompt had focus


def test_key_content_needs_keys_text_and_scopes_filter_events(tmp_path: Path) -> None:
    session = build_session(3, 120, canaries=False)
    land(tmp_path / "store", "c1", P1, raw_events(session))
    grant(tmp_path / "store", P1, [Scope.KEYS_TIMING, Scope.CONTEXT])  # no keys:text, no mouse
    built = build(tmp_path / "store", tmp_path / "out", options(eval_fraction=0))
    text = dataset_text(built.path)
    card = built.card
    assert "type-classes" in text and 'type \\"' not in text and "git" not in text
    assert "click" not in text and "move " not in text
    assert card["counts"]["key_events_reduced_to_class"] > 0
    assert card["excluded"]["scope not granted: mouse"] == len(session.mouse)
    assert set(card["scopes"]) == {"keys:timing", "context"}


def test_grant_window_erasure_and_missing_grants(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = raw_events(build_session(1, 120, canaries=False))
    land(store, "c1", P1, one)
    land(store, "c2", P2, raw_events(build_session(2, 120, canaries=False)))
    # P1's grant ends a minute into its session: later events are outside every window.
    end = datetime.fromtimestamp((T0 + 60 * 10**9) / 1e9, tz=UTC).isoformat()
    grant(store, P1, ALL, expires=end)
    with pytest.raises(InputError) as empty:  # P2 has no grant at all; P1 only a minute
        build(store, tmp_path / "out", options(eval_fraction=0, min_history=10_000))
    assert "no consent grant on record" in str(empty.value)
    assert "outside every grant window" in str(empty.value)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "latest"]  # nothing left

    built = build(store, tmp_path / "out", options(eval_fraction=0))
    excluded = built.card["excluded"]
    inside = sum(1 for e in one if e.wall_ns < T0 + 60 * 10**9)
    assert built.card["counts"]["events_kept"] == inside
    assert excluded["outside every grant window"] == len(one) - inside
    assert built.card["counts"]["pseudonyms"] == 1

    grant(store, P2, ALL)
    assert (
        build(store, tmp_path / "out", options(eval_fraction=0)).card["counts"]["pseudonyms"] == 2
    )
    Tombstones(Layout(store)).erase(P2.hex(), datetime.now(UTC), "consent_revoked")
    after = build(store, tmp_path / "out", options(eval_fraction=0))
    assert after.card["counts"]["pseudonyms"] == 1
    assert after.card["counts"]["events_kept"] == inside
    assert not (store / "consent" / f"{P2.hex()}.json").exists()


def test_screenshots_only_with_their_scope(tmp_path: Path) -> None:
    store = tmp_path / "store"
    events = raw_events(build_session(5, 60, canaries=False))
    image = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    shot = ScreenshotEvent(
        len(events), 0, events[-1].wall_ns + 1, image, ImageFormat.JPEG, EventFlag.SYNTHETIC
    )
    land(store, "c1", P1, [*events, shot])
    grant(store, P1, ALL)
    without = build(store, tmp_path / "a", options(eval_fraction=0, min_history=1, horizon=1))
    assert without.card["excluded"] == {"scope not granted: screenshots": 1}
    assert not list((without.path / "images").iterdir())
    grant(store, P1, [*ALL, Scope.SCREENSHOTS], granted="2026-02-01T00:00:00+00:00")
    with_scope = build(store, tmp_path / "b", options(eval_fraction=0, min_history=1, horizon=1))
    (name,) = [p.name for p in (with_scope.path / "images").iterdir()]
    assert (with_scope.path / "images" / name).read_bytes() == image
    assert f"screenshot {name}" in dataset_text(with_scope.path)


def test_corrupt_frames_are_counted_and_skipped(tmp_path: Path) -> None:
    store = tmp_path / "store"
    events = raw_events(build_session(9, 120, canaries=False))
    frames = land(store, "c1", P1, events, batch=100)
    grant(store, P1, ALL)
    (segment,) = (store / "segments").rglob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    built = build(store, tmp_path / "out", options(eval_fraction=0))
    assert built.card["counts"]["frames_read"] == frames
    assert sum(built.card["corrupt_frames"].values()) == 1
    assert len(events) - 100 <= built.card["counts"]["events_read"] < len(events)


def test_sessions_split_whole_and_builds_are_reproducible(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seq = 0
    for i in range(6):  # six sessions, an hour apart
        events = raw_events(
            build_session(20 + i, 90, canaries=False), first_seq=seq, t0=T0 + i * HOUR_NS
        )
        seq += len(events)
        land(store, "c1", P1, events)
    grant(store, P1, ALL)
    out = tmp_path / "out"
    built = build(store, out, options(eval_fraction=0.3))
    card = built.card
    assert card["counts"]["sessions"]["train"] + card["counts"]["sessions"]["eval"] == 6
    assert card["counts"]["sessions"]["eval"] >= 1
    train = read_examples(built.path / "train.jsonl")
    held = read_examples(built.path / "eval.jsonl")
    assert {e.session for e in train}.isdisjoint({e.session for e in held})
    example = train[0]
    assert example.prompt.endswith(NEXT_HEADER) and example.completion.endswith(END)
    assert len(example.completion.splitlines()) <= BuildOptions.horizon + 1

    again = build(store, out, options(eval_fraction=0.3))
    assert again.reused and again.path == built.path
    assert (out / "latest").resolve() == built.path.resolve()
    assert verify(built.path)["dataset_id"] == card["dataset_id"]
    (built.path / "eval.jsonl").write_text("tampered\n")
    with pytest.raises(InputError, match=r"eval\.jsonl: sha256 differs"):
        verify(built.path)


def test_bad_inputs_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a capturelab store"):
        build(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(InputError, match="eval_fraction"):
        build(tmp_path, tmp_path / "out", options(eval_fraction=1.5))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "session": "s", "prompt": 3, "completion": ""}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: field prompt"):
        read_examples(bad)


def test_only_grants_the_authority_signed_count(tmp_path: Path) -> None:
    """A grant written into the store by hand (or altered there) is refused and counted; the
    participant's events are then excluded as having no grant."""
    store = tmp_path / "store"
    land(store, "c1", P1, raw_events(build_session(5, 120, canaries=False)))
    land(store, "c2", P2, raw_events(build_session(6, 120, canaries=False)))
    grant(store, P1, ALL)
    grant(store, P2, ALL)
    path = store / "consent" / f"{P2.hex()}.json"
    doc = json.loads(path.read_text())
    doc["grants"].append({**doc["grants"][0], "expires": "2099-01-01T00:00:00+00:00"})  # widened
    doc["grants"][0] = {k: v for k, v in doc["grants"][0].items() if k != "signature"}
    path.write_text(json.dumps(doc))
    built = build(store, tmp_path / "out", options(eval_fraction=0))
    assert built.card["counts"]["pseudonyms"] == 1 and built.card["counts"]["grants_refused"] == 2
    assert built.card["excluded"]["no consent grant on record"] > 0
    reasons = " | ".join(built.refused_grants)
    assert "grants[0]: unsigned grant" in reasons and "signature does not match" in reasons
    assert str(path) in reasons
    assert P2.hex() not in json.dumps(built.card)  # the reasons stay out of the card
    assert (
        built.card["consent_authority_keys"]
        and "grants refused: 2" in (built.path / "card.md").read_text()
    )


def test_a_missing_trust_file_is_named_before_anything_is_written(tmp_path: Path) -> None:
    store = tmp_path / "store"
    land(store, "c1", P1, raw_events(build_session(5, 60, canaries=False)))
    grant(store, P1, ALL)
    missing = tmp_path / "nowhere.pub"
    with pytest.raises(InputError, match=r"nowhere\.pub: cannot read the consent authority"):
        build(store, tmp_path / "out", BuildOptions(trust_file=missing))
    assert not (tmp_path / "out").exists()


def test_a_grant_in_an_excluded_region_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    land(store, "c1", P1, raw_events(build_session(5, 120, canaries=False)))
    land(store, "c2", P2, raw_events(build_session(6, 120, canaries=False)))
    grant(store, P1, ALL, region="eu")
    grant(store, P2, ALL)
    built = build(store, tmp_path / "out", options(eval_fraction=0))
    assert built.card["counts"]["pseudonyms"] == 1 and built.card["counts"]["grants_refused"] == 1
    (reason,) = built.refused_grants
    assert P1.hex() in reason and "the record's region: region eu is excluded (GDPR)" in reason
    card = json.loads((built.path / "card.json").read_text())
    assert card["options"]["excluded_regions"] == ["eu"]
    declared = build(
        store, tmp_path / "out2", options(eval_fraction=0, lawful_basis_override="consent")
    )
    assert declared.card["counts"]["pseudonyms"] == 2 and not declared.refused_grants


def test_a_build_in_an_excluded_region_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    land(store, "c1", P1, raw_events(build_session(5, 120, canaries=False)))
    grant(store, P1, ALL)
    with pytest.raises(InputError, match="dataset option region 'eu': this host: region eu is"):
        build(store, tmp_path / "out", options(region="eu"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="lawful_basis_override 'because' is not one of"):
        build(store, tmp_path / "out", options(region="eu", lawful_basis_override="because"))
    argv = ["dataset", "build", "--store", str(store), "--out", str(tmp_path / "out"),
            "--trust", str(TRUST), "--region", "CA", "--excluded-regions", "ca,eu"]  # fmt: skip
    assert main(argv) == 2
    assert "dataset option region 'ca': this host: region ca is excluded" in capsys.readouterr().err
    assert main([*argv, "--lawful-basis-override", "public_task", "--eval-fraction", "0"]) == 0


@pytest.mark.parametrize("through_edge", [False, True], ids=["raw-frames", "after-the-edge"])
def test_an_excluded_window_leaves_only_its_mark_in_the_dataset(
    tmp_path: Path, through_edge: bool
) -> None:
    session = build_session(5, 120, canaries=False)
    at = session.merged()[-1][0] + 1  # after the session's last event
    vault = _Builder(random.Random(1), 52, 125)  # noqa: S311 - synthetic typing
    vault.t = at
    vault.focus("org.keepassxc.KeePassXC", "Passwords.kdbx - KeePassXC")
    vault.type_text("CanaryVault77")
    vault.move_and_click()
    vault.focus("xterm", "alice@lab: ~/projects")
    for n in range(30):  # enough after it for the examples' windows to reach it
        vault.type_text(f"echo back {n}")
        vault.press("KEY_ENTER")
    session.keyboard += vault.s.keyboard
    session.mouse += vault.s.mouse
    session.focus += vault.s.focus
    events = edge_events(session, ALL) if through_edge else raw_events(session)
    land(tmp_path / "store", "c1", P1, events)
    grant(tmp_path / "store", P1, ALL)
    built = build(tmp_path / "store", tmp_path / "out", options(eval_fraction=0))
    text = dataset_text(built.path)
    assert "CanaryVault77" not in text and "KeePassXC" not in text
    assert "excluded" in text and "echo back" in text
    dropped = built.card["excluded"].get("an excluded window had focus", 0)
    # The edge sent nothing of the window; a raw stream's events are dropped by the builder.
    assert dropped == 0 if through_edge else dropped > 2 * len("CanaryVault77")
