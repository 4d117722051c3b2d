"""The collector's consent gate: the signed record, the decision, and what it announces.

``ConsentGate.check()`` answers "may this collector capture now, and under which scopes and
pseudonym?". Invariants:

- capture is allowed only for a record signed by a trusted authority key, unaltered, valid now,
  and neither its region nor the host's is excluded; every other case is a refusal with a
  reason, never an exception (a bad record is logged once and the daemon keeps running);
- the record and the trust file are re-read only when one of them changed (mtime);
- each grant is announced once (``consent_granted``), each revocation once (``consent_revoked``
  then ``erasure_requested``), both into the spool's control queue; what was announced is kept
  in ``<spool>/revocations.json`` so a restart does not announce it again;
- with ``identity_key`` set, nothing is captured unless the key loads and the authority's
  certificate names this collector and this key (``identity.check_own``); the certificate is
  announced on the control topic (once per certificate) before any grant, so the storage tier
  knows the key before the first frame it signed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from capturelab import identity
from capturelab.authority import Signature, Trust, load_trust
from capturelab.collector.config import CollectorConfig
from capturelab.collector.spool import Spool
from capturelab.consent import (
    ConsentRecord,
    ControlMessage,
    ControlType,
    Decision,
    Scope,
    Status,
    decide,
    grant_fields,
    load_signed_record,
)
from capturelab.durable import write_atomic
from capturelab.errors import InputError
from capturelab.exclusions import NONE, Exclusions
from capturelab.schema import pseudonymize

log = logging.getLogger("capturelab.collector")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True)
class Verdict:
    """One answer of the gate. ``ended`` is the record whose window closed (expiry, revocation):
    what the edge holds is sealed only up to its end."""

    allowed: bool
    reason: str
    scopes: frozenset[Scope] = field(default_factory=frozenset)
    pseudonym: bytes = b""
    ended: ConsentRecord | None = None
    exclude: Exclusions = NONE  # the record's own excluded apps and windows


class ConsentGate:
    def __init__(
        self,
        config: CollectorConfig,
        secret: bytes,
        spool: Spool,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.secret = secret
        self.spool = spool
        self.clock = clock
        self.record: ConsentRecord | None = None
        self.grant_signature: Signature | None = None
        self.decision: Decision | None = None
        self._missing = ""  # why there is no record (set when the files change)
        self._logged_refusal = ""
        self._mtimes: tuple[float | None, ...] = (-1.0,)
        self._published = self._load_published()
        self.key: identity.CollectorKey | None = None
        self.certificate: identity.Certificate | None = None
        self.key_refused = ""

    # --- the record ---------------------------------------------------------------------------

    def _load(self) -> None:
        """Re-read the record and the trust file when either changed; refuse, never raise."""
        path, trust_path = self.config.consent_file, self.config.consent_authority_file
        key_paths = (self.config.identity_key, self.config.identity_certificate)
        mtimes = tuple(_mtime(p) if p else None for p in (path, trust_path, *key_paths))
        if mtimes == self._mtimes:
            return
        self._mtimes = mtimes
        self.record, self.grant_signature = None, None
        if mtimes[0] is None:
            self._missing = f"no consent record at {path}: nothing is captured"
            return
        try:
            trust = load_trust(trust_path)
            self._load_identity(trust)
            signed = load_signed_record(path, trust, self.secret)
        except InputError as exc:
            self._missing = f"consent record refused ({exc}): nothing is captured"
            log.error("%s", self._missing)
            return
        self.record, self.grant_signature = signed.record, signed.grant_signature
        log.info("consent record %s: signed by authority key %s", path, signed.signature.key)

    def _load_identity(self, trust: Trust) -> None:
        """This collector's key and certificate, checked against the trust (when configured).

        A refused key stops capture, but ``key`` keeps the last certified one: what was captured
        under it is still sealed with it (never unsigned, never with a key nobody announced)."""
        self.key_refused = ""
        key_path, cert_path = self.config.identity_key, self.config.identity_certificate
        if key_path is None or cert_path is None:
            return
        try:
            key = identity.load_key(key_path)
            certificate = identity.load_certificate(cert_path)
            identity.check_own(key, certificate, self.config.collector_id, trust, str(cert_path))
        except InputError as exc:
            self.key_refused = f"collector key refused ({exc}): nothing is captured"
            log.error("%s", self.key_refused)
            return
        self.key, self.certificate = key, certificate
        self._publish_certificate()
        log.info("collector key %s, certified by authority key %s", key.key_id,
                 certificate.signature.key)  # fmt: skip

    def check(self) -> Verdict:
        """Decide now, announcing a new grant or revocation on the way (see the invariants)."""
        self._load()
        record = self.record
        if record is None:
            self.decision = None
            return Verdict(False, self._missing)
        if self.key_refused:
            self.decision = None
            return Verdict(False, self.key_refused)
        decision = decide(record, self.clock())
        self.decision = decision
        if not decision.allowed:
            if decision.status is Status.REVOKED:
                self._publish_revocation(record)
            return Verdict(False, decision.reason, ended=record)
        refusal = self.config.regions.refusal(record.region)
        if refusal:
            reason = f"{refusal}: nothing is captured"
            if reason != self._logged_refusal:
                log.error("%s", reason)
                self._logged_refusal = reason
            return Verdict(False, reason)
        self._logged_refusal = ""
        pseudonym = pseudonymize(self.secret, record.participant_id)
        self._publish_grant(record, pseudonym)
        return Verdict(True, decision.reason, decision.scopes, pseudonym, exclude=record.exclude)

    # --- announcements (the control topic, through the spool) -----------------------------------

    def _published_path(self) -> Path:
        return self.config.spool_dir / "revocations.json"

    def _load_published(self) -> set[str]:
        try:
            return set(json.loads(self._published_path().read_text()))
        except (OSError, ValueError):
            return set()

    def _remember(self, marker: str) -> None:
        self._published.add(marker)
        write_atomic(
            self._published_path(), json.dumps(sorted(self._published)).encode(), self.spool.tmp
        )

    def _announce(self, ctype: ControlType, pseudonym: bytes, at: datetime, note: str,
                  record: ConsentRecord) -> None:  # fmt: skip
        message = ControlMessage(
            ctype, pseudonym, self.config.collector_id, at, note, record, self.grant_signature
        )
        self.spool.put_control(self.config.control_topic, message.key, message.encode())

    def _publish_certificate(self) -> None:
        """The authority's certificate of this collector's key, once per certificate."""
        if self.certificate is None:
            return
        marker = "key:" + identity.digest(self.certificate)
        if marker in self._published:
            return
        self.spool.put_control(
            self.config.control_topic,
            identity.control_key(self.certificate),
            identity.control_value(self.certificate),
        )
        self._remember(marker)

    def _publish_grant(self, record: ConsentRecord, pseudonym: bytes) -> None:
        """Tell the storage node what this participant agreed to (once per grant, no id)."""
        fields = json.dumps(grant_fields(record), sort_keys=True)
        marker = "grant:" + hashlib.sha256(pseudonym + fields.encode()).hexdigest()
        if marker in self._published:
            return
        self._announce(ControlType.CONSENT_GRANTED, pseudonym, record.granted,
                       "consent granted on the collector", record)  # fmt: skip
        self._remember(marker)

    def _publish_revocation(self, record: ConsentRecord) -> None:
        pseudonym = pseudonymize(self.secret, record.participant_id)
        revoked = record.window_end()
        marker = hashlib.sha256(pseudonym + revoked.isoformat().encode()).hexdigest()
        if marker in self._published:
            return
        for ctype in (ControlType.CONSENT_REVOKED, ControlType.ERASURE_REQUESTED):
            self._announce(ctype, pseudonym, revoked, "consent revoked on the collector", record)
        self._remember(marker)
        log.warning("consent revoked: capture stopped, erasure requested for this participant")
