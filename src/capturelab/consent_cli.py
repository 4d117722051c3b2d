"""``capturelab consent keygen | sign | verify | revoke | certify``: the consent authority's
controller side.

``certify`` signs a collector's public key (``capturelab.identity``): the certificate the
collector announces so that the storage tier accepts the frames that key signs.

The private key never leaves the controller; nodes get the public key (a trust file). ``sign``
and ``revoke`` write a record with both signatures (``consent.sign_record``); ``verify`` exits 0
only for a record that is signed by a trusted key, unaltered, valid at the given time and not in
an excluded region, and otherwise names the file and the reason (exit 1: refused, 2: bad input).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from capturelab import authority, identity
from capturelab.consent import (
    decide,
    load_record,
    load_signed_record,
    parse_record,
    parse_time,
    region_allowed,
    sign_record,
    signed_document,
)
from capturelab.durable import write_atomic
from capturelab.errors import CapturelabError, InputError
from capturelab.schema import read_lab_secret


class RefusedError(CapturelabError):
    """A record that is well formed but may not be used (expired, revoked, excluded region)."""

    exit_code = 1


def _at(value: str | None) -> datetime:
    return parse_time(value, "--at") if value else datetime.now(UTC).replace(microsecond=0)


def _secret(args: argparse.Namespace) -> bytes:
    """The lab secret from --lab-secret FILE or --lab-secret-env NAME (Ansible passes it so)."""
    if args.lab_secret_env:
        value = os.environ.get(args.lab_secret_env, "").strip().encode()
        if len(value) < 16:
            raise InputError(
                f"--lab-secret-env {args.lab_secret_env}: the variable holds {len(value)} bytes: "
                "at least 16 are needed"
            )
        return value
    return read_lab_secret(Path(args.lab_secret))


def _write(document: dict[str, object], out: str, mode: int = 0o640) -> None:
    text = yaml.safe_dump(document, sort_keys=False).encode()
    if out == "-":
        sys.stdout.write(text.decode())
        return
    path = Path(out)
    write_atomic(path, text)
    path.chmod(mode)


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.exist_ok:
        key, created = authority.ensure(Path(args.key), Path(args.public))
    else:
        key, created = authority.generate(Path(args.key), Path(args.public)), True
    state = "created" if created else "exists"
    print(
        f"consent authority key {key.key_id} {state}: private {args.key} (0600), public {args.public}"
    )
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    # From stdin, a record from the vault never touches the disk; any old signature is dropped.
    record = (
        parse_record(_stdin_record(), "stdin")
        if args.record == "-"
        else load_record(Path(args.record))
    )
    signed = sign_record(record, authority.load_authority(Path(args.key)), _secret(args))
    _write(signed_document(signed), args.out)
    return 0


def _stdin_record() -> dict[str, object]:
    try:
        data = yaml.safe_load(sys.stdin.read())
    except (yaml.YAMLError, ValueError) as exc:
        raise InputError(f"stdin: the consent record is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("stdin: expected a consent record (a mapping of fields)")
    return {k: v for k, v in data.items() if k not in ("signature", "grant_signature")}


def cmd_revoke(args: argparse.Namespace) -> int:
    key = authority.load_authority(Path(args.key))
    secret = _secret(args)
    trust = authority.Trust({key.key_id: key.public_key()}, args.key)
    signed = load_signed_record(Path(args.record), trust, secret)  # never re-sign an altered one
    revoked = dataclasses.replace(signed.record, revoked=_at(args.at))
    _write(signed_document(sign_record(revoked, key, secret)), args.out or args.record)
    print(
        f"{args.record}: revoked at {revoked.revoked}; deploy it to the collector", file=sys.stderr
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    trust = authority.load_trust(Path(args.trust))
    signed = load_signed_record(Path(args.record), trust, _secret(args))
    record, at = signed.record, _at(args.at)
    decision = decide(record, at)
    if not decision.allowed:
        raise RefusedError(f"{args.record}: {decision.reason}")
    for whose, region in (
        ("the record's region", record.region),
        ("--host-region", args.host_region),
    ):
        allowed, reason = region_allowed(
            region, args.excluded_regions, args.lawful_basis_override or None
        )
        if not allowed:
            raise RefusedError(f"{args.record}: {whose}: {reason}")
    print(f"{args.record}: signed by {signed.signature.key}; {decision.reason}")
    return 0


def _regions(value: str) -> list[str]:
    return [r.strip() for r in value.split(",") if r.strip()]


def cmd_certify(args: argparse.Namespace) -> int:
    key = authority.load_authority(Path(args.key))
    public = _collector_public(args.public)
    if args.keep and args.out != "-" and _kept(Path(args.out), key, args.collector, public):
        print(f"collector {args.collector!r}: {args.out} kept (it certifies this key)")
        return 0
    try:
        certificate = identity.certify(key, args.collector, public, _at(args.at))
    except InputError as exc:
        raise InputError(f"--collector: {exc}") from None
    text = json.dumps(certificate.encode(), indent=1) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode())
        path.chmod(0o644)
        print(f"collector {args.collector!r}: key {certificate.key_id} certified in {path}")
    print(
        f"collector {args.collector!r}: key {certificate.key_id} certified by authority key "
        f"{key.key_id}",
        file=sys.stderr,
    )
    return 0


def _collector_public(source: str) -> Ed25519PublicKey:
    """The collector's public key from a PEM file, or from stdin (``-``: as the role sends it)."""
    if source != "-":
        return authority.load_public_key(Path(source), "collector public key")
    return authority.parse_public_key(sys.stdin.buffer.read(), "--public -", "collector public key")


def _kept(path: Path, key: authority.Authority, collector: str, public: Ed25519PublicKey) -> bool:
    """Whether ``path`` already holds this authority's certificate of this collector's key."""
    if not path.exists():
        return False
    try:
        existing = identity.load_certificate(path)
        existing.verify(authority.Trust({key.key_id: key.public_key()}, str(path)), str(path))
    except InputError:
        return False
    return existing.collector_id == collector and existing.key_id == authority.key_id(public)


def _lab_secret_arguments(parser: argparse.ArgumentParser, text: str) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--lab-secret", metavar="FILE", help=text)
    group.add_argument("--lab-secret-env", metavar="NAME", help="the same, from this variable")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("consent", help="the consent authority: keys, signed records, revocation")
    csub = p.add_subparsers(dest="consent_command", metavar="ACTION", required=True)

    keygen = csub.add_parser("keygen", help="a new Ed25519 authority key (never overwrites)")
    keygen.add_argument("--key", required=True, help="the private key file to create (0600)")
    keygen.add_argument("--public", required=True, help="the public key file (a trust file)")
    keygen.add_argument(
        "--exist-ok",
        action="store_true",
        help="keep an existing key (throwaway labs: two provisioning runs may race for it); "
        "a trust file that lacks the key is still an error",
    )
    keygen.set_defaults(handler=cmd_keygen)

    pseudonym_help = "the lab secret file (pseudonyms: the grant signature covers the pseudonym)"
    sign = csub.add_parser("sign", help="sign a consent record (a signed one is re-signed)")
    sign.add_argument("record", metavar="RECORD", help="the record file, or - for stdin")
    sign.add_argument("--key", required=True, help="the authority's private key file")
    _lab_secret_arguments(sign, pseudonym_help)
    sign.add_argument("--out", default="-", help="where to write it (default: stdout)")
    sign.set_defaults(handler=cmd_sign)

    revoke = csub.add_parser("revoke", help="revoke a signed record (re-signed with revoked)")
    revoke.add_argument("record", metavar="RECORD")
    revoke.add_argument("--key", required=True, help="the authority's private key file")
    _lab_secret_arguments(revoke, pseudonym_help)
    revoke.add_argument("--at", help="the revocation time (ISO 8601; default: now)")
    revoke.add_argument("--out", help="where to write it (default: RECORD, in place)")
    revoke.set_defaults(handler=cmd_revoke)

    verify = csub.add_parser("verify", help="exit 0 only for a signed, valid, allowed record")
    verify.add_argument("record", metavar="RECORD")
    verify.add_argument("--trust", required=True, help="the trust file (public keys)")
    _lab_secret_arguments(verify, pseudonym_help)
    verify.add_argument("--at", help="check validity at this time (ISO 8601; default: now)")
    verify.add_argument("--host-region", default="", help="the collector host's region")
    verify.add_argument(
        "--excluded-regions", type=_regions, default=["eu"], help="comma separated (default: eu)"
    )
    verify.add_argument("--lawful-basis-override", default="", help="declared for the host")
    verify.set_defaults(handler=cmd_verify)

    certify = csub.add_parser("certify", help="certify a collector's public key (frame signing)")
    certify.add_argument("--key", required=True, help="the authority's private key file")
    certify.add_argument("--collector", required=True, help="the collector id (its host name)")
    certify.add_argument(
        "--public",
        required=True,
        help="the collector's public key (capturelab collector keygen), or - for stdin",
    )
    certify.add_argument("--at", help="the issue time (ISO 8601; default: now)")
    certify.add_argument(
        "--keep",
        action="store_true",
        help="leave --out as it is when it already certifies this collector's key (idempotent)",
    )
    certify.add_argument("--out", default="-", help="where to write it (default: stdout)")
    certify.set_defaults(handler=cmd_certify)
