"""The consent authority: one Ed25519 key, on the controller, signs what consent says.

Invariants:

- the private key lives only on the controller, in a file that nobody but its owner can read
  (mode 0600 or stricter; a looser file is refused, naming the file and its mode); nodes hold
  public keys only, in a *trust file* of one or more PEM public keys (more than one while a key
  is being rotated);
- what is signed is a canonical document: ``{"kind": ..., "body": ...}`` as JSON with sorted
  keys, no spaces, UTF-8. The kind is part of what is signed, so a signature over one kind of
  document never verifies as another;
- a signature names its key by key id (the first 16 hex digits of the SHA-256 of the raw
  public key) and verifies only against that key of the trust file: an unknown signer, a
  signature over other bytes and a malformed signature are each refused with their reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from capturelab.errors import InputError

log = logging.getLogger(__name__)

# Where the collector role keeps (and the sim lab generates) the key on the controller:
# consent_authority_dir (roles/consent_authority); the validation suites sign test records with it.
CONTROLLER_DIR = Path.home() / ".local/share/capturelab/consent"
KEY_ID_HEX = 16
SIGNATURE_BYTES = 64
PEM_PUBLIC_BEGIN = b"-----BEGIN PUBLIC KEY-----"
PEM_PUBLIC_END = b"-----END PUBLIC KEY-----"


def canonical(kind: str, body: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the kind and the body, as canonical JSON."""
    return json.dumps(
        {"kind": kind, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


@dataclass(frozen=True)
class Signature:
    """A signature and the id of the key that made it; ``{"key": id, "ed25519": base64}``."""

    key: str
    value: bytes

    def encode(self) -> dict[str, str]:
        return {"key": self.key, "ed25519": base64.b64encode(self.value).decode()}

    @classmethod
    def decode(cls, data: Any, where: str) -> Signature:
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: the signature must be a mapping with key and ed25519")
        key, value = data.get("key"), data.get("ed25519")
        if not isinstance(key, str) or len(key) != KEY_ID_HEX:
            raise InputError(f"{where}.key must be a key id of {KEY_ID_HEX} hex digits")
        if not isinstance(value, str):
            raise InputError(f"{where}.ed25519 must be a base64 string")
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise InputError(f"{where}.ed25519 is not base64") from None
        if len(raw) != SIGNATURE_BYTES:
            raise InputError(f"{where}.ed25519 holds {len(raw)} bytes, not {SIGNATURE_BYTES}")
        return cls(key, raw)


class Authority:
    """The private key: signs canonical documents. Only the controller ever holds one."""

    def __init__(self, private: Ed25519PrivateKey, source: str) -> None:
        self._private = private
        self.source = source
        self.key_id = key_id(private.public_key())

    def sign(self, kind: str, body: Mapping[str, Any]) -> Signature:
        return Signature(self.key_id, self._private.sign(canonical(kind, body)))

    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    def public_pem(self) -> bytes:
        return public_pem(self.public_key())


class Trust:
    """The public keys a node accepts, by key id (a trust file)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], source: str) -> None:
        if not keys:
            raise InputError(f"{source}: holds no Ed25519 public key")
        self.keys = dict(keys)
        self.source = source

    def keys_text(self) -> str:
        return ", ".join(sorted(self.keys))

    def verify(self, kind: str, body: Mapping[str, Any], signature: Signature, where: str) -> None:
        """Raise InputError naming ``where`` unless a trusted key signed exactly this document."""
        public = self.keys.get(signature.key)
        if public is None:
            raise InputError(
                f"{where}: signed by key {signature.key}, which {self.source} does not trust "
                f"(trusted: {self.keys_text()})"
            )
        try:
            public.verify(signature.value, canonical(kind, body))
        except InvalidSignature:
            raise InputError(
                f"{where}: the signature does not match the {kind.replace('_', ' ')}: it was "
                "altered after signing, or the signature is over another one"
            ) from None


# --- Key files ----------------------------------------------------------------------------------


def generate(private_path: Path, public_path: Path) -> Authority:
    """A new key pair; refuses to overwrite either file (a lost key is rotated, not replaced)."""
    for path in (private_path, public_path):
        if path.exists():
            raise InputError(f"{path} exists: a consent authority key is never overwritten")
    try:
        authority = _create_private(private_path)
    except FileExistsError:
        raise InputError(
            f"{private_path} exists: a consent authority key is never overwritten"
        ) from None
    _write_public(public_path, authority)
    return authority


def ensure(private_path: Path, public_path: Path) -> tuple[Authority, bool]:
    """The key pair, created when the private key is absent (True) or loaded (False).

    Safe when two provisioning runs race: the private key appears whole or not at all (written
    aside, then hard-linked into place, which fails if it exists), so exactly one key wins and
    the loser loads it. A missing trust file is written from the key; an existing one must hold
    the key (it may hold more while a key is rotated) and is never rewritten.
    """
    try:
        authority, created = _create_private(private_path), True
    except FileExistsError:
        authority, created = load_authority(private_path), False
    if not public_path.exists():
        _write_public(public_path, authority)
    elif authority.key_id not in load_trust(public_path).keys:
        raise InputError(
            f"{public_path} does not hold the public key of {private_path} (key "
            f"{authority.key_id}): the trust file belongs to another key"
        )
    return authority, created


def _create_private(path: Path) -> Authority:
    """Write a new private key atomically; FileExistsError when one is there already."""
    return Authority(create_private_key(path), str(path))


def create_private_key(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key written atomically (mode 0600); FileExistsError when one is there."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        path.hardlink_to(tmp)  # atomic, and never replaces an existing key
    finally:
        tmp.unlink()
    return private


def _write_public(path: Path, authority: Authority) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(authority.public_pem())
    Path(name).chmod(0o644)
    Path(name).replace(path)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def load_authority(path: Path) -> Authority:
    """The private key file: readable by its owner only, an unencrypted PKCS#8 Ed25519 key."""
    return Authority(load_private_key(path, "consent authority key"), str(path))


def load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    """An Ed25519 private key file that only its owner can read; errors name ``what``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if mode & 0o077:
        raise InputError(
            f"{path}: the {what} has mode {mode:04o}: group and others must "
            f"have no access (chmod 600 {path})"
        )
    data = _read(path, what)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise InputError(f"{path}: the {what} must be Ed25519")
    return private


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path, what: str) -> Ed25519PublicKey:
    """One PEM Ed25519 public key (the first block of the file)."""
    return parse_public_key(_read(path, what), str(path), what)


def parse_public_key(data: bytes, where: str, what: str) -> Ed25519PublicKey:
    """One PEM Ed25519 public key (the first block of ``data``); errors name ``where``."""
    try:
        public = serialization.load_pem_public_key(_pem_blocks(data, Path(where), what)[0])
    except ValueError as exc:
        raise InputError(f"{where}: the {what} is not a PEM public key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise InputError(f"{where}: the {what} is not an Ed25519 key")
    return public


def load_trust(path: Path) -> Trust:
    """A trust file: one or more PEM Ed25519 public keys, one after another."""
    data = _read(path, "consent authority trust file")
    keys: dict[str, Ed25519PublicKey] = {}
    for i, block in enumerate(_pem_blocks(data, path)):
        try:
            public = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise InputError(
                f"{path}: public key {i + 1} is not a PEM public key ({exc})"
            ) from None
        if not isinstance(public, Ed25519PublicKey):
            raise InputError(f"{path}: public key {i + 1} is not an Ed25519 key")
        keys[key_id(public)] = public
    return Trust(keys, str(path))


class TrustFile:
    """A trust file read at start (an unreadable one is an error then) and re-read whenever it
    changes, so a rotated key is trusted without a restart. A later unreadable version is
    logged once and the keys read last stay in force: a broken edit never opens the door."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()
        self.trust = load_trust(path)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> Trust:
        stamp = self._stamp()
        if stamp == self._seen:
            return self.trust
        self._seen = stamp
        try:
            self.trust = load_trust(self.path)
        except InputError as exc:
            log.error("%s; still trusting the keys read before: %s", exc, self.trust.keys_text())
        else:
            log.info("%s re-read: trusting %s", self.path, self.trust.keys_text())
        return self.trust


def _pem_blocks(
    data: bytes, path: Path, what: str = "a consent authority trust file"
) -> list[bytes]:
    blocks, rest = [], data
    while PEM_PUBLIC_BEGIN in rest:
        start = rest.index(PEM_PUBLIC_BEGIN)
        end = rest.find(PEM_PUBLIC_END, start)
        if end < 0:
            raise InputError(f"{path}: a PUBLIC KEY block has no END line")
        end += len(PEM_PUBLIC_END)
        blocks.append(rest[start:end] + b"\n")
        rest = rest[end:]
    if not blocks:
        raise InputError(f"{path}: holds no PEM PUBLIC KEY block ({what})")
    return blocks
