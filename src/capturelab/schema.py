"""The event schema and the batch frame: the one definition every tier imports.

A capture message's value is one *batch*: a fixed 68-byte header followed by a payload
(zstd-compressed by default). The payload starts with the participant's 32-byte pseudonym and
then holds the batch's events, each a kind byte and a fixed-layout record. Byte-by-byte layout
with a worked example: ``docs/event-format.md``.

Invariants the frame enforces on decode (so every later stage can prove no loss and no
duplicate): the events of a batch have consecutive sequence numbers starting at the header's
``first_seq``, their number equals the header's ``count``, and a CRC32C covers the header and
the payload. One batch belongs to one collector and one participant.

A frame whose header has ``FLAG_SIGNED`` ends with a trailer after the payload: the 8-byte id of
the collector's key and an Ed25519 signature over ``FRAME_DOMAIN``, the header and the payload
(``capturelab.identity``). The CRC32C covers the header and the payload, not the trailer.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import itertools
import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import crc32c
import zstandard

from capturelab.errors import InputError

SCHEMA_VERSION = 2  # what the encoder writes
READABLE_VERSIONS = (1, 2)  # v1: one record after another; v2: delta-coded columns
MAGIC = b"CLAB"
PSEUDONYM_BYTES = 32
COLLECTOR_ID_BYTES = 32
COLLECTOR_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MAX_BATCH_EVENTS = 1_000_000
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_ZSTD_LEVEL = 3

# magic, version, codec, flags, collector id, first seq, count, dict id, payload len,
# raw (uncompressed) len, crc32c
HEADER = struct.Struct("<4sHBB32sQIIIII")
HEADER_SIZE = HEADER.size  # 68
_CRC_OFFSET = HEADER_SIZE - 4
FLAG_SIGNED = 0x01  # a key id and an Ed25519 signature follow the payload
KNOWN_FLAGS = FLAG_SIGNED
KEY_ID_BYTES = 8
SIGNATURE_BYTES = 64
TRAILER_SIZE = KEY_ID_BYTES + SIGNATURE_BYTES
FRAME_DOMAIN = b"capturelab frame v1\0"  # what a frame signature covers starts with this

# kind 1: seq, mono_ns, wall_ns, device, type, code, value, flags
INPUT_RECORD = struct.Struct("<QQqBHHiB")
# kind 2: seq, mono_ns, wall_ns, flags, app length, title length (then the UTF-8 bytes)
CONTEXT_RECORD = struct.Struct("<QQqBHH")
KIND_INPUT = 1
KIND_CONTEXT = 2
KIND_SCREENSHOT = 3  # schema v2 only
MAX_IMAGE_BYTES = 512 * 1024  # a batch must fit Kafka's default 1 MB message with its events
MAX_TEXT_BYTES = 1024
# What peek_batch reads: the pseudonym, then the first record's kind, seq, mono and wall clock.
_PEEK_BYTES = PSEUDONYM_BYTES + 1 + 24


class FrameError(InputError):
    """A batch that cannot be decoded; the message names the field at fault. Quarantine it."""


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1


class DeviceClass(enum.IntEnum):
    KEYBOARD = 0
    MOUSE = 1
    TOUCHPAD = 2
    OTHER = 3


class EventFlag(enum.IntFlag):
    """Per-event flags: what the edge did to the event before it left the process."""

    NONE = 0
    KEY_CLASS = 1  # under keys:timing the key code was replaced by its KeyClass
    SECURE_INPUT = 2  # secure-input mode: key content dropped (code is KeyClass.UNKNOWN)
    REDACTED = 4  # text of a context event went through the shared redaction function
    SYNTHETIC = 8  # produced by `capturelab synth`, not a person
    EXCLUDED = 16  # a context event: an excluded window took focus (app and title are empty)


class KeyClass(enum.IntEnum):
    """Key classes that replace printable key codes under the ``keys:timing`` scope.

    They live above the kernel's key code range (KEY_MAX = 0x2ff), so a class can never be
    mistaken for a real key.
    """

    UNKNOWN = 0xF000
    LETTER = 0xF001
    DIGIT = 0xF002
    PUNCTUATION = 0xF003
    SPACE = 0xF004
    ENTER = 0xF005
    BACKSPACE = 0xF006
    TAB = 0xF007
    MODIFIER = 0xF008
    NAVIGATION = 0xF009
    FUNCTION = 0xF00A
    OTHER = 0xF00B


@dataclass(frozen=True, slots=True)
class InputEvent:
    """One kernel input event (``struct input_event``: type, code, value) with our identity."""

    seq: int
    mono_ns: int
    wall_ns: int
    device: DeviceClass
    type: int
    code: int
    value: int
    flags: EventFlag = EventFlag.NONE


@dataclass(frozen=True, slots=True)
class ContextEvent:
    """The focused application changed (X11 / sway IPC); title text is redacted before this."""

    seq: int
    mono_ns: int
    wall_ns: int
    app: str
    title: str
    flags: EventFlag = EventFlag.NONE


class ImageFormat(enum.IntEnum):
    PNG = 1
    JPEG = 2


@dataclass(frozen=True, slots=True)
class ScreenshotEvent:
    """A screenshot (scope ``screenshots``, off by default), never taken during secure input."""

    seq: int
    mono_ns: int
    wall_ns: int
    image: bytes
    format: ImageFormat
    flags: EventFlag = EventFlag.NONE

    def __post_init__(self) -> None:
        if len(self.image) > MAX_IMAGE_BYTES:
            raise InputError(
                f"screenshot seq {self.seq} is {len(self.image)} bytes (max {MAX_IMAGE_BYTES})"
            )


Event = InputEvent | ContextEvent | ScreenshotEvent
_KIND_OF = {InputEvent: KIND_INPUT, ContextEvent: KIND_CONTEXT, ScreenshotEvent: KIND_SCREENSHOT}


@dataclass(frozen=True, slots=True)
class FrameHeader:
    version: int
    codec: Codec
    collector_id: str
    first_seq: int
    count: int
    dict_id: int
    payload_len: int
    raw_len: int
    crc: int
    flags: int = 0

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @property
    def signed(self) -> bool:
        return bool(self.flags & FLAG_SIGNED)

    @property
    def payload_end(self) -> int:
        return HEADER_SIZE + self.payload_len

    @property
    def frame_len(self) -> int:
        return self.payload_end + (TRAILER_SIZE if self.signed else 0)


@dataclass(frozen=True, slots=True)
class Batch:
    collector_id: str
    pseudonym: bytes
    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        validate_collector_id(self.collector_id)
        if len(self.pseudonym) != PSEUDONYM_BYTES:
            raise InputError(
                f"batch.pseudonym must be {PSEUDONYM_BYTES} bytes, got {len(self.pseudonym)}"
            )
        if not self.events:
            raise InputError("batch.events is empty: a batch carries at least one event")
        if len(self.events) > MAX_BATCH_EVENTS:
            raise InputError(f"batch.events has {len(self.events)} events (max {MAX_BATCH_EVENTS})")
        first = self.events[0].seq
        for i, event in enumerate(self.events):
            if event.seq != first + i:
                raise InputError(
                    f"batch.events[{i}].seq is {event.seq}, expected {first + i}: sequences in a "
                    "batch are consecutive"
                )

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def pseudonym_hex(self) -> str:
        return self.pseudonym.hex()


def validate_collector_id(collector_id: str) -> str:
    if not COLLECTOR_ID_RE.match(collector_id):
        raise InputError(
            f"collector id {collector_id!r} must be 1-32 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return collector_id


def pseudonymize(lab_secret: bytes, participant_id: str) -> bytes:
    """HMAC-SHA256(lab secret, participant id): the only participant identity that leaves a device."""
    if len(lab_secret) < 16:
        raise InputError("lab secret must be at least 16 bytes")
    if not participant_id:
        raise InputError("participant id is empty")
    return hmac.new(lab_secret, participant_id.encode(), hashlib.sha256).digest()


def read_lab_secret(path: Path) -> bytes:
    """The lab secret file (stripped); it names itself when unreadable or too short."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"lab secret {path}: {exc.strerror}") from None
    if len(secret) < 16:
        raise InputError(f"lab secret {path} holds {len(secret)} bytes: at least 16 are needed")
    return secret


# zstd contexts are not thread-safe (python-zstandard: "instances are not thread safe"), and
# a sink runs consumers in threads: each thread keeps its own, reused across batches.
_contexts = threading.local()


def _thread_cache() -> dict[tuple[object, ...], object]:
    cache: dict[tuple[object, ...], object] | None = getattr(_contexts, "cache", None)
    if cache is None:
        cache = {}
        _contexts.cache = cache
    return cache


def _compressor(
    level: int, dictionary: zstandard.ZstdCompressionDict | None
) -> zstandard.ZstdCompressor:
    cache = _thread_cache()
    key = ("c", level, dictionary)
    found = cache.get(key)
    if not isinstance(found, zstandard.ZstdCompressor):
        found = zstandard.ZstdCompressor(level=level, dict_data=dictionary, write_content_size=True)
        cache[key] = found
    return found


def _decompressor(dictionary: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdDecompressor:
    cache = _thread_cache()
    key = ("d", dictionary)
    found = cache.get(key)
    if not isinstance(found, zstandard.ZstdDecompressor):
        found = zstandard.ZstdDecompressor(dict_data=dictionary)
        cache[key] = found
    return found


def _shuffle(data: bytes, width: int) -> bytes:
    """Byte-transpose fixed-width values (all first bytes, then all second bytes...)."""
    if width == 1:
        return data
    return b"".join(data[k::width] for k in range(width))


def _unshuffle(data: bytes | memoryview, width: int, n: int) -> bytes:
    if width == 1:
        return bytes(data)
    out = bytearray(n * width)
    for k in range(width):
        out[k::width] = data[k * n : (k + 1) * n]
    return bytes(out)


_U64 = (1 << 64) - 1


def _i64(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def _column(fmt: str, values: list[int]) -> bytes:
    return _shuffle(struct.pack(f"<{len(values)}{fmt}", *values), struct.calcsize(fmt))


def encode_events(events: Iterable[Event]) -> bytes:
    """A version 2 payload body (after the pseudonym), also what dictionaries are trained on.

    The first event's kind, seq, mono and wall clock come first (what ``peek_batch`` reads), then
    columns, each byte-transposed: kinds; mono deltas; wall-minus-mono deltas (usually 0); for
    input events device, flags, type, code, value; for context events flags, app and title
    lengths, then the texts. Sequence numbers are implicit (first seq + index).
    """
    evs = list(events)
    if not evs:
        return b""
    first = evs[0]
    kinds = bytes(_KIND_OF[type(e)] for e in evs)
    monos = [e.mono_ns for e in evs]
    skews = [e.wall_ns - e.mono_ns for e in evs]
    # Deltas modulo 2**64 (two's complement): any u64 mono and i64 wall clock round-trip.
    mono_d = [(b - a) & _U64 for a, b in itertools.pairwise(monos)]
    skew_d = [(b - a) & _U64 for a, b in itertools.pairwise(skews)]
    inputs = [e for e in evs if isinstance(e, InputEvent)]
    contexts = [e for e in evs if isinstance(e, ContextEvent)]
    parts = [
        struct.pack("<BQQq", kinds[0], first.seq, first.mono_ns, first.wall_ns),
        kinds,
        _column("Q", mono_d),
        _column("Q", skew_d),
        bytes(e.device for e in inputs),
        bytes(e.flags for e in inputs),
        _column("H", [e.type for e in inputs]),
        _column("H", [e.code for e in inputs]),
        _column("i", [e.value for e in inputs]),
    ]
    if contexts:
        apps = [e.app.encode()[:MAX_TEXT_BYTES] for e in contexts]
        titles = [e.title.encode()[:MAX_TEXT_BYTES] for e in contexts]
        parts += [
            bytes(e.flags for e in contexts),
            _column("H", [len(a) for a in apps]),
            _column("H", [len(t) for t in titles]),
            *(a + t for a, t in zip(apps, titles, strict=True)),
        ]
    shots = [e for e in evs if isinstance(e, ScreenshotEvent)]
    if shots:
        parts += [
            bytes(e.flags for e in shots),
            bytes(e.format for e in shots),
            _column("I", [len(e.image) for e in shots]),
            *(e.image for e in shots),
        ]
    return b"".join(parts)


def encode_events_v1(events: Iterable[Event]) -> bytes:
    """Version 1 records (one after another): still read, written only for compatibility tests."""
    parts: list[bytes] = []
    pack_input = INPUT_RECORD.pack
    pack_context = CONTEXT_RECORD.pack
    for e in events:
        if isinstance(e, InputEvent):
            parts.append(b"\x01")
            parts.append(
                pack_input(e.seq, e.mono_ns, e.wall_ns, e.device, e.type, e.code, e.value, e.flags)
            )
        elif isinstance(e, ScreenshotEvent):
            raise InputError("schema version 1 has no screenshot records")
        else:
            app = e.app.encode()[:MAX_TEXT_BYTES]
            title = e.title.encode()[:MAX_TEXT_BYTES]
            parts.append(b"\x02")
            parts.append(pack_context(e.seq, e.mono_ns, e.wall_ns, e.flags, len(app), len(title)))
            parts.append(app)
            parts.append(title)
    return b"".join(parts)


FrameSigner = Callable[[bytes], bytes]  # FRAME_DOMAIN + header + payload -> the trailer


def encode_batch(
    batch: Batch,
    *,
    codec: Codec = Codec.ZSTD,
    level: int = DEFAULT_ZSTD_LEVEL,
    dictionary: zstandard.ZstdCompressionDict | None = None,
    signer: FrameSigner | None = None,
) -> bytes:
    """Frame a batch: header + (compressed) payload, CRC32C over both; with a ``signer``
    (``identity.CollectorKey.sign_frame``) the header says so and the trailer follows."""
    if not 1 <= level <= 22:
        raise InputError(f"zstd level must be 1-22, got {level}")
    raw = batch.pseudonym + encode_events(batch.events)
    dict_id = 0
    if codec is Codec.ZSTD:
        if dictionary is not None:
            dict_id = dictionary.dict_id()
        # The pseudonym and the first record get a zstd block of their own: the sink reads them
        # (``peek_batch``) from the first few compressed bytes without decoding the batch.
        cobj = _compressor(level, dictionary).compressobj(size=len(raw))
        payload = (
            cobj.compress(raw[:_PEEK_BYTES])
            + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            + cobj.compress(raw[_PEEK_BYTES:])
            + cobj.flush()
        )
    elif codec is Codec.NONE:
        if dictionary is not None:
            raise InputError("a dictionary needs codec zstd")
        payload = raw
    else:  # pragma: no cover - enum is exhaustive
        raise InputError(f"unknown codec {codec!r}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InputError(
            f"batch payload is {len(payload)} bytes (max {MAX_PAYLOAD_BYTES}): batch smaller"
        )
    header = bytearray(
        HEADER.pack(
            MAGIC,
            SCHEMA_VERSION,
            codec,
            FLAG_SIGNED if signer is not None else 0,
            batch.collector_id.encode().ljust(COLLECTOR_ID_BYTES, b"\0"),
            batch.first_seq,
            len(batch.events),
            dict_id,
            len(payload),
            len(raw),
            0,
        )
    )
    seal_crc(header, payload)
    if signer is None:
        return bytes(header) + payload
    signed = bytes(header) + payload
    trailer = signer(FRAME_DOMAIN + signed)
    if len(trailer) != TRAILER_SIZE:
        raise InputError(f"a frame trailer is {TRAILER_SIZE} bytes, the signer gave {len(trailer)}")
    return signed + trailer


def frame_trailer(frame: bytes, header: FrameHeader) -> tuple[bytes, bytes, bytes]:
    """A signed frame's key id, signature and the bytes the signature covers."""
    if not header.signed:
        raise FrameError("header.flags: the frame is not signed")
    end = header.payload_end
    trailer = frame[end : end + TRAILER_SIZE]
    return trailer[:KEY_ID_BYTES], trailer[KEY_ID_BYTES:], FRAME_DOMAIN + frame[:end]


def frame_crc(header: bytes | bytearray | memoryview, payload: bytes | memoryview) -> int:
    """A frame's CRC32C: the header up to its CRC field, then the payload."""
    return crc32c.crc32c(payload, crc32c.crc32c(header[:_CRC_OFFSET]))


def seal_crc(header: bytearray, payload: bytes | memoryview) -> None:
    """Write the frame's CRC32C into the header's CRC field."""
    struct.pack_into("<I", header, _CRC_OFFSET, frame_crc(header, payload))


def stored_crc(frame: bytes) -> int:
    """The CRC32C a frame's header carries (no other header check: see ``read_header``)."""
    crc: int = struct.unpack_from("<I", frame, _CRC_OFFSET)[0]
    return crc


_CODECS = {c.value: c for c in Codec}
_COLLECTOR_IDS: dict[bytes, str] = {}  # header field -> checked id: a sink sees a few hundred
_COLLECTOR_IDS_MAX = 4096


def _header_collector_id(cid: bytes) -> str:
    known = _COLLECTOR_IDS.get(cid)
    if known is not None:
        return known
    try:
        collector_id = validate_collector_id(cid.rstrip(b"\0").decode("ascii"))
    except (UnicodeDecodeError, InputError):
        raise FrameError(f"header.collector_id {cid!r} is not a valid collector id") from None
    if len(_COLLECTOR_IDS) < _COLLECTOR_IDS_MAX:
        _COLLECTOR_IDS[cid] = collector_id
    return collector_id


def read_header(frame: bytes) -> FrameHeader:
    """Decode and sanity-check the header only (no decompression, no CRC check)."""
    if len(frame) < HEADER_SIZE:
        raise FrameError(f"frame is {len(frame)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, codec, flags, cid, first, count, dict_id, plen, rlen, crc = HEADER.unpack_from(
        frame
    )
    if magic != MAGIC:
        raise FrameError(f"header.magic is {magic!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise FrameError(
            f"header.version is {version}, this reader understands {', '.join(map(str, READABLE_VERSIONS))}"
        )
    codec_enum = _CODECS.get(codec)
    if codec_enum is None:
        raise FrameError(f"header.codec {codec} is unknown")
    collector_id = _header_collector_id(cid)
    if not 1 <= count <= MAX_BATCH_EVENTS:
        raise FrameError(f"header.count is {count} (1-{MAX_BATCH_EVENTS})")
    if flags & ~KNOWN_FLAGS:
        raise FrameError(f"header.flags {flags:#04x} holds bits this reader does not know")
    trailer = TRAILER_SIZE if flags & FLAG_SIGNED else 0
    if plen != len(frame) - HEADER_SIZE - trailer:
        raise FrameError(
            f"header.payload_len is {plen} but {len(frame) - HEADER_SIZE - trailer} payload "
            f"bytes follow{' (and a signature)' if trailer else ''}"
        )
    if rlen > MAX_PAYLOAD_BYTES * 8:
        raise FrameError(f"header.raw_len {rlen} is implausibly large")
    return FrameHeader(
        version, codec_enum, collector_id, first, count, dict_id, plen, rlen, crc, flags
    )


def verify_crc(frame: bytes, header: FrameHeader) -> None:
    view = memoryview(frame)  # slices of a view: the payload is hashed where it lies, not copied
    crc = frame_crc(view[:HEADER_SIZE], view[HEADER_SIZE : header.payload_end])
    if crc != header.crc:
        raise FrameError(f"header.crc32c is {header.crc:#010x} but the frame hashes to {crc:#010x}")


class _Cursor:
    def __init__(self, raw: memoryview, pos: int) -> None:
        self.raw, self.pos = raw, pos

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.raw):
            raise FrameError(f"payload: the {what} column is truncated")
        view = self.raw[self.pos : self.pos + n]
        self.pos += n
        return view

    def column(self, fmt: str, n: int, what: str) -> tuple[int, ...]:
        width = struct.calcsize(fmt)
        data = _unshuffle(self.take(n * width, what), width, n)
        return struct.unpack(f"<{n}{fmt}", data)


def _decode_columns(raw: memoryview, header: FrameHeader) -> tuple[Event, ...]:
    n = header.count
    cur = _Cursor(raw, PSEUDONYM_BYTES)
    _k0, seq0, mono0, wall0 = struct.unpack("<BQQq", cur.take(25, "first event"))
    if seq0 != header.first_seq:
        raise FrameError(f"payload: first event seq {seq0}, header.first_seq {header.first_seq}")
    kinds = bytes(cur.take(n, "kinds"))
    bad = set(kinds) - {KIND_INPUT, KIND_CONTEXT, KIND_SCREENSHOT}
    if bad:
        raise FrameError(f"payload: unknown record kind {min(bad)}")
    mono_d = cur.column("Q", n - 1, "mono delta")
    skew_d = cur.column("Q", n - 1, "wall delta")
    monos = [v & _U64 for v in itertools.accumulate(mono_d, initial=mono0)]
    skews = [v & _U64 for v in itertools.accumulate(skew_d, initial=(wall0 - mono0) & _U64)]
    m = kinds.count(KIND_INPUT)
    c = kinds.count(KIND_CONTEXT)
    devices = bytes(cur.take(m, "device"))
    in_flags = bytes(cur.take(m, "flags"))
    types = cur.column("H", m, "type")
    codes = cur.column("H", m, "code")
    values = cur.column("i", m, "value")
    contexts = _context_columns(cur, c, seq0)
    shots = _screenshot_columns(cur, n - m - c)
    events: list[Event] = []
    i_in = i_ctx = i_shot = 0
    for i, kind in enumerate(kinds):
        seq, mono = seq0 + i, monos[i]
        wall = _i64(mono + skews[i])
        if kind == KIND_INPUT:
            try:
                dev = DeviceClass(devices[i_in])
            except ValueError:
                raise FrameError(
                    f"payload: event seq {seq} has unknown device class {devices[i_in]}"
                ) from None
            events.append(InputEvent(seq, mono, wall, dev, types[i_in], codes[i_in],
                                     values[i_in], EventFlag(in_flags[i_in])))  # fmt: skip
            i_in += 1
        elif kind == KIND_CONTEXT:
            app, title, flags = contexts[i_ctx]
            events.append(ContextEvent(seq, mono, wall, app, title, EventFlag(flags)))
            i_ctx += 1
        else:
            image, fmt, flags = shots[i_shot]
            events.append(ScreenshotEvent(seq, mono, wall, image, fmt, EventFlag(flags)))
            i_shot += 1
    if cur.pos != len(raw):
        raise FrameError(f"payload: {len(raw) - cur.pos} bytes follow the last column")
    return tuple(events)


def _context_columns(cur: _Cursor, c: int, seq0: int) -> list[tuple[str, str, int]]:
    flags = bytes(cur.take(c, "context flags"))
    app_lens = cur.column("H", c, "app length")
    title_lens = cur.column("H", c, "title length")
    out = []
    for i in range(c):
        text = bytes(cur.take(app_lens[i] + title_lens[i], "context text"))
        try:
            out.append((text[: app_lens[i]].decode(), text[app_lens[i] :].decode(), flags[i]))
        except UnicodeDecodeError:
            raise FrameError(f"payload: context text {i} (after seq {seq0}) is not UTF-8") from None
    return out


def _screenshot_columns(cur: _Cursor, count: int) -> list[tuple[bytes, ImageFormat, int]]:
    flags = bytes(cur.take(count, "screenshot flags"))
    formats = bytes(cur.take(count, "screenshot format"))
    lengths = cur.column("I", count, "screenshot length")
    out = []
    for i in range(count):
        if lengths[i] > MAX_IMAGE_BYTES:
            raise FrameError(f"payload: screenshot {i} claims {lengths[i]} bytes")
        try:
            fmt = ImageFormat(formats[i])
        except ValueError:
            raise FrameError(f"payload: screenshot {i} has unknown format {formats[i]}") from None
        out.append((bytes(cur.take(lengths[i], "screenshot image")), fmt, flags[i]))
    return out


def _decode_records(raw: memoryview, header: FrameHeader) -> tuple[Event, ...]:
    events: list[Event] = []
    pos = PSEUDONYM_BYTES
    end = len(raw)
    expected = header.first_seq
    unpack_input = INPUT_RECORD.unpack_from
    unpack_context = CONTEXT_RECORD.unpack_from
    while pos < end:
        kind = raw[pos]
        pos += 1
        event: Event
        if kind == KIND_INPUT:
            if pos + INPUT_RECORD.size > end:
                raise FrameError(f"payload: input record at byte {pos} is truncated")
            seq, mono, wall, device, etype, code, value, flags = unpack_input(raw, pos)
            pos += INPUT_RECORD.size
            try:
                dev = DeviceClass(device)
            except ValueError:
                raise FrameError(
                    f"payload: event seq {seq} has unknown device class {device}"
                ) from None
            event = InputEvent(seq, mono, wall, dev, etype, code, value, EventFlag(flags))
        elif kind == KIND_CONTEXT:
            if pos + CONTEXT_RECORD.size > end:
                raise FrameError(f"payload: context record at byte {pos} is truncated")
            seq, mono, wall, flags, app_len, title_len = unpack_context(raw, pos)
            pos += CONTEXT_RECORD.size
            if pos + app_len + title_len > end:
                raise FrameError(f"payload: context record seq {seq} text is truncated")
            try:
                app = bytes(raw[pos : pos + app_len]).decode()
                title = bytes(raw[pos + app_len : pos + app_len + title_len]).decode()
            except UnicodeDecodeError:
                raise FrameError(f"payload: context record seq {seq} text is not UTF-8") from None
            pos += app_len + title_len
            event = ContextEvent(seq, mono, wall, app, title, EventFlag(flags))
        else:
            raise FrameError(f"payload: unknown record kind {kind} at byte {pos - 1}")
        if event.seq != expected:
            raise FrameError(
                f"payload: event seq {event.seq} where {expected} was expected (gap or repeat)"
            )
        expected += 1
        events.append(event)
    if len(events) != header.count:
        raise FrameError(
            f"header.count is {header.count} but the payload holds {len(events)} events"
        )
    return tuple(events)


def _dictionary_for(
    header: FrameHeader, dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None
) -> zstandard.ZstdCompressionDict | None:
    if not header.dict_id:
        return None
    dictionary = (dictionaries or {}).get(header.dict_id)
    if dictionary is None:
        raise FrameError(f"header.dict_id {header.dict_id} names a dictionary this reader lacks")
    return dictionary


def decode_batch(
    frame: bytes,
    *,
    dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None = None,
) -> Batch:
    """Decode and fully verify a frame; FrameError names what is wrong (quarantine the frame)."""
    header = read_header(frame)
    verify_crc(frame, header)
    payload = memoryview(frame)[HEADER_SIZE : header.payload_end]  # no copy
    raw: bytes | memoryview
    if header.codec is Codec.ZSTD:
        dictionary = _dictionary_for(header, dictionaries)
        try:
            raw = _decompressor(dictionary).decompress(payload, max_output_size=header.raw_len)
        except zstandard.ZstdError as exc:
            raise FrameError(f"payload: zstd decompression failed: {exc}") from None
    else:
        raw = payload
    if len(raw) != header.raw_len:
        raise FrameError(
            f"header.raw_len is {header.raw_len} but the payload decodes to {len(raw)} bytes"
        )
    if len(raw) < PSEUDONYM_BYTES:
        raise FrameError("payload is shorter than the pseudonym")
    if header.version == 1:
        events = _decode_records(memoryview(raw), header)
    else:
        events = _decode_columns(memoryview(raw), header)
    return Batch(
        collector_id=header.collector_id, pseudonym=bytes(raw[:PSEUDONYM_BYTES]), events=events
    )


@dataclass(frozen=True, slots=True)
class BatchPeek:
    """What the sink needs of a batch, without decoding every event."""

    header: FrameHeader
    pseudonym: bytes
    first_wall_ns: int


def peek_batch(
    frame: bytes,
    *,
    dictionaries: Mapping[int, zstandard.ZstdCompressionDict] | None = None,
) -> BatchPeek:
    """Header, CRC32C, pseudonym and the first event's wall clock: decompresses only a prefix.

    The CRC covers header and payload, so a frame that passes was written by our encoder as is;
    the per-event checks of ``decode_batch`` run where every event is read anyway (the dataset
    builder). FrameError names what is wrong (quarantine the frame).
    """
    header = read_header(frame)
    verify_crc(frame, header)
    payload = memoryview(frame)[HEADER_SIZE : header.payload_end]  # no copy
    prefix: bytes | memoryview
    if header.codec is Codec.ZSTD:
        dictionary = _dictionary_for(header, dictionaries)
        try:
            # Our encoder puts the prefix in a block of its own: a few hundred compressed bytes
            # hold it. A frame without that block decodes its whole first block instead.
            prefix = _decompressor(dictionary).decompressobj().decompress(payload[:512])
            if len(prefix) < _PEEK_BYTES:
                with _decompressor(dictionary).stream_reader(payload) as reader:
                    prefix = reader.read(_PEEK_BYTES)
        except zstandard.ZstdError as exc:
            raise FrameError(f"payload: zstd decompression failed: {exc}") from None
    else:
        prefix = payload[:_PEEK_BYTES]
    if len(prefix) < _PEEK_BYTES:
        raise FrameError("payload is shorter than the pseudonym and one event")
    kind = prefix[PSEUDONYM_BYTES]
    if kind not in (KIND_INPUT, KIND_CONTEXT, KIND_SCREENSHOT):
        raise FrameError(f"payload: unknown record kind {kind} at byte {PSEUDONYM_BYTES}")
    seq, _mono, wall = struct.unpack_from("<QQq", prefix, PSEUDONYM_BYTES + 1)
    if seq != header.first_seq:
        raise FrameError(f"payload: first event seq {seq}, header.first_seq {header.first_seq}")
    return BatchPeek(header, bytes(prefix[:PSEUDONYM_BYTES]), wall)


def load_dictionary(path: Path) -> zstandard.ZstdCompressionDict:
    """A trained zstd dictionary file (``capturelab collector train-dictionary``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"zstd dictionary {path}: {exc.strerror}") from None
    dictionary = zstandard.ZstdCompressionDict(data)
    if not dictionary.dict_id():
        raise InputError(f"zstd dictionary {path} is not a trained dictionary (no dictionary id)")
    return dictionary


def train_dictionary(samples: list[bytes], size: int = 16 * 1024) -> zstandard.ZstdCompressionDict:
    """Train a zstd dictionary on encoded event records (``encode_events`` of typical batches)."""
    if len(samples) < 8:
        raise InputError(f"dictionary training needs at least 8 samples, got {len(samples)}")
    return zstandard.train_dictionary(size, list[bytes | bytearray | memoryview](samples))
