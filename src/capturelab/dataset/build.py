"""Build a redacted, consent-filtered dataset from the sink's store (on the storage node).

For every pseudonym on the array: read and check its frames, rebuild its sessions, keep only
events inside a grant the collector announced and the consent authority signed (window and
scope, ``capturelab.consent``; a grant no trusted key verifies is refused and counted) and not
erased on request, turn them into actions (redacting every text, ``capturelab.dataset.actions``),
cut examples, split whole sessions into train and eval, and write a versioned directory::

    <out>/<dataset id>/train.jsonl eval.jsonl images/ card.json card.md
    <out>/latest -> <dataset id>

The dataset id is the SHA-256 of the files' names and hashes: the same store and options build
the same id. Nothing is written unless the whole build succeeds; an empty result is an error
that says which filter removed what.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capturelab.authority import load_trust
from capturelab.consent import (
    ConsentRecord,
    LawfulBasis,
    RegionFields,
    RegionPolicy,
    Scope,
    Status,
    scope_for,
)
from capturelab.dataset import card as card_md
from capturelab.dataset.actions import ActionBuilder, Findings
from capturelab.dataset.example import FORMAT, FORMAT_VERSION, Example, windows
from capturelab.dataset.reader import ReadStats, Session, sessions
from capturelab.durable import fsync_dir, point_latest, write_atomic
from capturelab.errors import InputError
from capturelab.redact import Recogniser
from capturelab.schema import Event, ImageFormat, InputEvent, ScreenshotEvent, load_dictionary
from capturelab.sink import grants
from capturelab.sink.erasure import Tombstones
from capturelab.sink.layout import Layout

_IMAGE_SUFFIX = {ImageFormat.PNG: ".png", ImageFormat.JPEG: ".jpg"}


DEFAULT_TRUST = Path("/etc/capturelab/authority.pub")


@dataclass(frozen=True)
class BuildOptions(RegionFields):
    """How a dataset is built. Its regions (``RegionFields``): a grant whose region is excluded
    is refused like an unsigned one; a build on a host in an excluded region fails."""

    history: int = 32  # actions of context in a prompt
    horizon: int = 8  # actions to predict
    min_history: int = 4  # the first example of a session starts after this many actions
    eval_fraction: float = 0.2  # share of sessions held out (at least one when there are two)
    session_gap_s: float = 600.0  # a pause this long starts a new session
    names: bool = False  # also redact person names (Presidio, the ``names`` extra)
    dictionaries: tuple[Path, ...] = ()
    # The consent authority's public key(s): only grants it signed are consent (sink role's copy).
    trust_file: Path = DEFAULT_TRUST

    def check(self) -> None:
        for name in ("history", "horizon", "min_history"):
            if getattr(self, name) < 1:
                raise InputError(f"dataset option {name} must be at least 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InputError("dataset option eval_fraction must be in [0, 1)")
        if self.session_gap_s <= 0:
            raise InputError("dataset option session_gap_s must be positive")
        if self.lawful_basis_override and self.lawful_basis_override not in set(LawfulBasis):
            raise InputError(
                f"dataset option lawful_basis_override {self.lawful_basis_override!r} is not "
                f"one of {', '.join(LawfulBasis)}"
            )
        refusal = self.regions.host_refusal()
        if refusal:
            raise InputError(
                f"dataset option region {self.region!r}: {refusal} "
                "(declare --lawful-basis-override): nothing is built"
            )


@dataclass
class Tally:
    pseudonyms: int = 0
    sessions: dict[str, int] = field(default_factory=lambda: {"train": 0, "eval": 0})
    examples: dict[str, int] = field(default_factory=lambda: {"train": 0, "eval": 0})
    events_kept: int = 0
    actions: int = 0
    key_content_reduced: int = 0  # raw key codes stored without a keys:text grant
    scopes: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    findings: Findings = field(default_factory=Findings)
    read: ReadStats = field(default_factory=ReadStats)
    refused_grants: list[str] = field(default_factory=list)  # each names its file and reason


@dataclass(frozen=True)
class Built:
    path: Path
    card: dict[str, Any]
    reused: bool  # the same content was built before
    refused_grants: tuple[str, ...] = ()  # grants no trusted key verifies (not in the card)


class _Filter:
    """The consent filter for one pseudonym: grants (windows, scopes) and its erasure."""

    def __init__(self, pseudonym: str, records: list[ConsentRecord], stones: Tombstones) -> None:
        self.pseudonym = pseudonym
        self.records = records
        self.stones = stones
        self.text_ok: set[int] = set()  # seqs of key events whose grant includes keys:text

    def keep(self, event: Event, tally: Tally) -> bool:
        if self.stones.erased(self.pseudonym, event.wall_ns):
            tally.excluded["erased on request"] += 1
            return False
        if not self.records:
            tally.excluded["no consent grant on record"] += 1
            return False
        at = datetime.fromtimestamp(event.wall_ns / 1e9, tz=UTC)
        valid = [r for r in self.records if r.status(at) is Status.VALID]
        if not valid:
            tally.excluded["outside every grant window"] += 1
            return False
        scope = scope_for(event)
        granted = [r for r in valid if scope in r.scopes]
        if not granted:
            tally.excluded[f"scope not granted: {scope.value}"] += 1
            return False
        tally.scopes[scope.value] += 1
        if any(Scope.KEYS_TEXT in r.scopes for r in granted):
            self.text_ok.add(event.seq)
        return True

    def text_allowed(self, tally: Tally) -> Callable[[Event], bool]:
        def allowed(event: Event) -> bool:
            ok = event.seq in self.text_ok
            if not ok and isinstance(event, InputEvent):
                tally.key_content_reduced += 1
            return ok

        return allowed


def _split(session_ids: list[str], fraction: float) -> set[str]:
    """Held-out sessions: by hash, so a session never moves between builds."""
    ranked = sorted(session_ids, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    held = {
        s for s in ranked if int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) < fraction * 2**32
    }
    if fraction > 0 and not held and len(ranked) >= 2:
        held = {ranked[0]}
    if held and len(held) == len(ranked):
        held.discard(ranked[-1])  # something is always left to train on
    return held


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Writer:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "images").mkdir(parents=True)
        self.files = {
            s: (tmp / f"{s}.jsonl").open("w", encoding="utf-8") for s in ("train", "eval")
        }

    def image(self, event: ScreenshotEvent) -> str:
        digest = hashlib.sha256(event.image).hexdigest()[:16]
        name = f"{digest}{_IMAGE_SUFFIX.get(event.format, '.bin')}"
        path = self.tmp / "images" / name
        if not path.exists():
            path.write_bytes(event.image)
        return name

    def example(self, split: str, example: Example) -> None:
        self.files[split].write(example.to_json() + "\n")

    def close(self) -> dict[str, str]:
        for fh in self.files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        return {
            p.relative_to(self.tmp).as_posix(): _sha256(p)
            for p in sorted(self.tmp.rglob("*"))
            if p.is_file()
        }


def _region_filter(
    records: list[ConsentRecord], regions: RegionPolicy, refused: list[str], where: str
) -> list[ConsentRecord]:
    """The grants this node's region policy allows; each other one is added to ``refused``."""
    kept = []
    for record in records:
        refusal = regions.refusal(record.region)
        if refusal:
            refused.append(f"{where}: grant from {record.granted.isoformat()} refused: {refusal}")
        else:
            kept.append(record)
    return kept


def build(store: Path, out: Path, options: BuildOptions | None = None) -> Built:
    opts = options or BuildOptions()
    opts.check()
    layout = Layout(store)
    if not layout.segments.is_dir():
        raise InputError(
            f"{store}: no segments/ directory: not a capturelab store (the sink's mount)"
        )
    trust = load_trust(opts.trust_file)  # before anything is read or written
    recognisers: list[Recogniser] = []
    if opts.names:
        from capturelab.names import person_recogniser  # noqa: PLC0415 - optional extra

        recognisers.append(person_recogniser())
    dictionaries = {d.dict_id(): d for d in (load_dictionary(p) for p in opts.dictionaries)}
    stones = Tombstones(layout)
    tally = Tally()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        writer = _Writer(tmp)
        pseudonyms = sorted({h.pseudonym for h in layout.hour_files()})
        all_sessions: list[tuple[Session, _Filter]] = []
        for pseudonym in pseudonyms:
            records, refused = grants.load_verified(layout, pseudonym, trust)
            records = _region_filter(records, opts.regions, refused, f"{store} {pseudonym}")
            tally.refused_grants.extend(refused)
            found = sessions(
                layout,
                pseudonym,
                tally.read,
                session_gap_s=opts.session_gap_s,
                dictionaries=dictionaries,
            )
            all_sessions.extend((s, _Filter(pseudonym, records, stones)) for s in found)
        held = _split([s.id for s, _ in all_sessions], opts.eval_fraction)
        kept_pseudonyms: set[str] = set()
        for session, consent in all_sessions:
            n = _session(
                session,
                consent,
                tally=tally,
                writer=writer,
                held=held,
                opts=opts,
                recognisers=recognisers,
            )
            if n:
                kept_pseudonyms.add(session.pseudonym)
        tally.pseudonyms = len(kept_pseudonyms)
        files = writer.close()
        if not tally.examples["train"] + tally.examples["eval"]:
            raise InputError(_empty_message(tally))
        built = _publish(tmp, out, files, _card(tally, opts, files, trust.keys_text()))
        return replace(built, refused_grants=tuple(tally.refused_grants))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _session(
    session: Session,
    consent: _Filter,
    *,
    tally: Tally,
    writer: _Writer,
    held: set[str],
    opts: BuildOptions,
    recognisers: Iterable[Recogniser],
) -> int:
    events = [e for e in session.events if consent.keep(e, tally)]
    if not events:
        return 0
    tally.events_kept += len(events)
    builder = ActionBuilder(
        consent.text_allowed(tally),
        tally.findings,
        extra_recognisers=recognisers,
        screenshot_name=writer.image,
    )
    for event in events:
        builder.feed(event)
    actions = builder.finish()
    if builder.excluded_events:
        tally.events_kept -= builder.excluded_events
        tally.excluded["an excluded window had focus"] += builder.excluded_events
    tally.actions += len(actions)
    split = "eval" if session.id in held else "train"
    n = 0
    for example in windows(
        session.id,
        actions,
        history=opts.history,
        horizon=opts.horizon,
        min_history=opts.min_history,
    ):
        writer.example(split, example)
        n += 1
    if n:
        tally.sessions[split] += 1
        tally.examples[split] += n
    else:
        tally.excluded["session too short for one example (actions)"] += len(actions)
    return n


def _empty_message(tally: Tally) -> str:
    parts = [f"{n} events: {why}" for why, n in tally.excluded.most_common()]
    parts += [f"{n} frames: {why}" for why, n in tally.read.corrupt.most_common()]
    read = f"{tally.read.events} events read from {tally.read.frames} frames"
    if not parts:
        return f"the dataset is empty: {read}, and none of them made an example"
    return f"the dataset is empty: {read}; removed: " + "; ".join(parts)


def dataset_id(files: dict[str, str]) -> str:
    """The SHA-256 of the format and every file's name and hash: the dataset's identity."""
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(f"{FORMAT}/{FORMAT_VERSION}\n{listing}".encode()).hexdigest()


def _card(tally: Tally, opts: BuildOptions, files: dict[str, str], keys: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset_id": dataset_id(files),
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            k: v for k, v in asdict(opts).items() if k not in ("dictionaries", "trust_file")
        },
        "consent_authority_keys": keys.split(", "),
        "counts": {
            "frames_read": tally.read.frames,
            "events_read": tally.read.events,
            "duplicate_events": tally.read.duplicates,
            "events_kept": tally.events_kept,
            "key_events_reduced_to_class": tally.key_content_reduced,
            "actions": tally.actions,
            "pseudonyms": tally.pseudonyms,
            "sessions": tally.sessions,
            "examples": tally.examples,
            "grants_refused": len(tally.refused_grants),
        },
        "scopes": dict(sorted(tally.scopes.items())),
        "redaction_findings": dict(sorted(tally.findings.by_kind.items())),
        "excluded": dict(tally.excluded.most_common()),
        "corrupt_frames": dict(tally.read.corrupt.most_common()),
        "files": files,
    }


def _publish(tmp: Path, out: Path, files: dict[str, str], card: dict[str, Any]) -> Built:
    final = out / card["dataset_id"][:16]
    if final.exists():
        previous = json.loads((final / "card.json").read_text())
        if previous.get("files") == files:
            point_latest(out, final.name)
            return Built(final, previous, reused=True)
        raise InputError(f"{final} exists with other content: remove it or build elsewhere")
    write_atomic(tmp / "card.json", (json.dumps(card, indent=1, sort_keys=True) + "\n").encode())
    write_atomic(tmp / "card.md", card_md.render(card).encode())
    tmp.chmod(0o755)
    fsync_dir(tmp)
    tmp.rename(final)
    fsync_dir(out)
    point_latest(out, final.name)
    return Built(final, card, reused=False)


def verify(path: Path) -> dict[str, Any]:
    """Check a built dataset against its card: every file present with its hash, nothing extra."""
    card_path = path / "card.json"
    try:
        card: dict[str, Any] = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{card_path}: not a readable dataset card ({exc})") from None
    files = card.get("files")
    if not isinstance(files, dict):
        raise InputError(f"{card_path}: field files is missing")
    problems = []
    for name, digest in sorted(files.items()):
        p = path / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif _sha256(p) != digest:
            problems.append(f"{name}: sha256 differs from the card")
    present = {
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.is_file() and p.name not in ("card.json", "card.md")
    }
    problems += [f"{name}: not listed in the card" for name in sorted(present - set(files))]
    if card.get("dataset_id") != dataset_id(files):
        problems.append("dataset_id does not match the files' hashes")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return card
