"""Redaction: the one function that strips secrets and PII, at the edge and in the dataset builder.

``redact(text)`` returns the text with every finding replaced by ``[KIND]`` and the findings
(kind, start, end) as offsets into the *input*. Recognisers, strongest first (an overlap keeps the
stronger, then the longer, span):

=============  ======================================================================
PRIVATE_KEY    PEM private-key blocks
JWT            three base64url segments starting ``eyJ``
API_KEY        tokens with known prefixes (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, Google,
               Hugging Face, npm, PyPI)
PASSWORD       the value typed after a password prompt or label (``password:``,
               ``passwd=``, ``Password for alice@host:``, ``--password x``, ``mysql -pX``)
CARD           13-19 digit card numbers that pass the Luhn check
IBAN           IBANs that pass the ISO 7064 mod-97 check
EMAIL          e-mail addresses
IP             IPv4 (each octet <= 255) and IPv6 addresses
PHONE          international (+CC) or grouped national phone numbers
SECRET         other high-entropy tokens (>= 20 chars, mixed classes, >= 3.5 bits/char)
=============  ======================================================================

Person names need a language model (Presidio with an explicit offline NLP engine); that
recogniser plugs in through ``extra_recognisers`` and is not part of this module's defaults.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

Recogniser = Callable[[str], Iterable["Finding"]]


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    kind: str

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "start": self.start, "end": self.end}


PRIORITY = [
    "PRIVATE_KEY",
    "JWT",
    "API_KEY",
    "PASSWORD",
    "CARD",
    "IBAN",
    "EMAIL",
    "IP",
    "PHONE",
    "PERSON",
    "SECRET",
]

_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----", re.S
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_API_KEY = re.compile(
    r"\b(?:"
    r"AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r"|pypi-[A-Za-z0-9_-]{50,}"  # PyPI
    r")"
)
# A label or prompt, then the secret (up to whitespace). Group "v" is the secret.
_PASSWORD = re.compile(
    r"(?i)(?:"
    r"(?<![A-Za-z])(?:password|passwd|passphrase|passcode|pwd|pass|pin|secret|token)\b(?:\s+for\s+\S+?)?\s*[:=]\s*"
    r"|--(?:password|passwd|pass|token|secret)(?:=|\s+)"
    r"|\bmysql\b[^\n]*?\s-p"
    r")(?P<v>[^\s\"']{3,})"
)
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,3}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}"
    r"|\b\d{3}[ .-]\d{3}[ .-]\d{4})\b"
)
_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def _regex(
    kind: str,
    pattern: re.Pattern[str],
    group: str | int = 0,
    check: Callable[[str], bool] | None = None,
) -> Recogniser:
    def recognise(text: str) -> Iterator[Finding]:
        for m in pattern.finditer(text):
            value = m.group(group)
            if value and (check is None or check(value)):
                yield Finding(m.start(group), m.end(group), kind)

    return recognise


def _card_ok(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _ip_ok(value: str) -> bool:
    """The candidate parses as an IPv4 or IPv6 address (octets <= 255, valid groups)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _secret_ok(value: str) -> bool:
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes >= 3 and _entropy(value) >= 3.5


DEFAULT_RECOGNISERS: tuple[Recogniser, ...] = (
    _regex("PRIVATE_KEY", _PRIVATE_KEY),
    _regex("JWT", _JWT),
    _regex("API_KEY", _API_KEY),
    _regex("PASSWORD", _PASSWORD, "v"),
    _regex("CARD", _CARD, check=_card_ok),
    _regex("IBAN", _IBAN, check=_iban_ok),
    _regex("EMAIL", _EMAIL),
    _regex("IP", _IPV4, check=_ip_ok),
    _regex("IP", _IPV6, check=_ip_ok),
    _regex("PHONE", _PHONE),
    _regex("SECRET", _TOKEN, check=_secret_ok),
)


def _rank(f: Finding) -> tuple[int, int]:
    kind_rank = PRIORITY.index(f.kind) if f.kind in PRIORITY else len(PRIORITY)
    return (kind_rank, -(f.end - f.start))


def find(text: str, extra_recognisers: Iterable[Recogniser] = ()) -> list[Finding]:
    """All findings, overlaps resolved (stronger kind, then longer span, wins), in text order."""
    candidates = [f for r in (*DEFAULT_RECOGNISERS, *extra_recognisers) for f in r(text)]
    kept: list[Finding] = []
    for f in sorted(candidates, key=_rank):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept)


def redact(text: str, extra_recognisers: Iterable[Recogniser] = ()) -> tuple[str, list[Finding]]:
    """The text with each finding replaced by ``[KIND]``, and the findings (input offsets)."""
    findings = find(text, extra_recognisers)
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(f"[{f.kind}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out), findings
