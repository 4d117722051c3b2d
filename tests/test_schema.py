"""The batch frame: round trips, and every kind of corruption is caught and named."""

from __future__ import annotations

import re
import struct
import threading
from pathlib import Path

import crc32c
import pytest

from capturelab.errors import InputError
from capturelab.schema import (
    HEADER,
    HEADER_SIZE,
    Batch,
    Codec,
    ContextEvent,
    DeviceClass,
    EventFlag,
    FrameError,
    InputEvent,
    KeyClass,
    decode_batch,
    encode_batch,
    encode_events,
    encode_events_v1,
    peek_batch,
    pseudonymize,
    read_header,
    train_dictionary,
)

SECRET = b"lab-secret-for-tests-only-32byte"
PSEUDONYM = pseudonymize(SECRET, "participant-7")


def _events(first: int = 100, n: int = 50) -> tuple[InputEvent | ContextEvent, ...]:
    out: list[InputEvent | ContextEvent] = []
    for i in range(n):
        seq = first + i
        if i == 10:
            out.append(
                ContextEvent(
                    seq,
                    1_000 + i,
                    1_700_000_000_000_000_000 + i,
                    "firefox",
                    "Inbox [EMAIL]",
                    EventFlag.REDACTED,
                )
            )
        elif i % 3 == 0:
            out.append(
                InputEvent(
                    seq, 1_000 + i, 1_700_000_000_000_000_000 + i, DeviceClass.MOUSE, 2, 0, -3
                )
            )
        else:
            out.append(
                InputEvent(
                    seq,
                    1_000 + i,
                    1_700_000_000_000_000_000 + i,
                    DeviceClass.KEYBOARD,
                    1,
                    KeyClass.LETTER,
                    i % 2,
                    EventFlag.KEY_CLASS,
                )
            )
    return tuple(out)


def _batch(**kw: object) -> Batch:
    return Batch(
        collector_id=str(kw.get("cid", "collector-01")), pseudonym=PSEUDONYM, events=_events()
    )


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.NONE])
def test_round_trip(codec: Codec):
    batch = _batch()
    frame = encode_batch(batch, codec=codec)
    header = read_header(frame)
    assert header.collector_id == "collector-01"
    assert (header.first_seq, header.count, header.last_seq) == (100, 50, 149)
    assert header.codec is codec
    assert header.frame_len == len(frame)
    assert decode_batch(frame) == batch
    assert decode_batch(frame).pseudonym_hex == PSEUDONYM.hex()  # the storage layout's folder name


def test_pseudonym_is_keyed_and_stable():
    assert pseudonymize(SECRET, "participant-7") == PSEUDONYM
    assert pseudonymize(SECRET, "participant-8") != PSEUDONYM
    assert pseudonymize(b"another-lab-secret-32-bytes-long", "participant-7") != PSEUDONYM
    assert len(PSEUDONYM) == 32
    with pytest.raises(InputError, match="lab secret"):
        pseudonymize(b"short", "p")


def test_header_is_68_bytes_little_endian():
    frame = encode_batch(_batch())
    assert HEADER_SIZE == 68
    assert frame[:4] == b"CLAB"
    assert struct.unpack_from("<H", frame, 4)[0] == 2
    assert struct.unpack_from("<Q", frame, 40)[0] == 100


def test_compression_helps_on_realistic_records():
    frame = encode_batch(Batch("collector-01", PSEUDONYM, _events(n=2000)))
    assert read_header(frame).raw_len / read_header(frame).payload_len > 4


def _flip(frame: bytes, offset: int) -> bytes:
    b = bytearray(frame)
    b[offset] ^= 0x08
    return bytes(b)


@pytest.mark.parametrize(
    ("offset", "needle"),
    [
        (0, "header.magic"),
        (4, "header.version"),
        (6, "header.codec"),
        (40, "crc32c"),  # first_seq: only the CRC over the header can tell
        (HEADER_SIZE + 5, "crc32c"),
    ],
)
def test_corruption_is_named(offset: int, needle: str):
    with pytest.raises(FrameError, match=needle):
        decode_batch(_flip(encode_batch(_batch()), offset))


def test_truncated_frame():
    frame = encode_batch(_batch())
    with pytest.raises(FrameError, match="payload_len"):
        decode_batch(frame[:-3])
    with pytest.raises(FrameError, match="shorter than the 68-byte header"):
        decode_batch(frame[:20])


def test_batch_invariants():
    ev = _events(n=3)
    with pytest.raises(InputError, match=r"batch.events\[1\].seq is 102, expected 101"):
        Batch("collector-01", PSEUDONYM, (ev[0], ev[2]))
    with pytest.raises(InputError, match=r"batch\.events is empty"):
        Batch("collector-01", PSEUDONYM, ())
    with pytest.raises(InputError, match="collector id 'Collector 1'"):
        Batch("Collector 1", PSEUDONYM, ev)
    with pytest.raises(InputError, match=r"batch\.pseudonym must be 32 bytes"):
        Batch("collector-01", b"x", ev)


def test_dictionary_round_trip_and_missing_dictionary():
    samples = [encode_events(_events(first=i * 50, n=50)) for i in range(64)]
    dictionary = train_dictionary(samples, size=4096)
    frame = encode_batch(_batch(), dictionary=dictionary)
    assert read_header(frame).dict_id == dictionary.dict_id()
    assert decode_batch(frame, dictionaries={dictionary.dict_id(): dictionary}) == _batch()
    with pytest.raises(FrameError, match="names a dictionary this reader lacks"):
        decode_batch(frame)


def test_bad_level():
    with pytest.raises(InputError, match="zstd level must be 1-22"):
        encode_batch(_batch(), level=0)


def test_worked_example_in_docs_matches_the_encoder():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "event-format.md").read_text()
    example = doc.split("## Worked example", 1)[1]
    dump = bytes.fromhex(
        "".join(
            m.group(1).replace(" ", "")
            for m in re.finditer(r"^[0-9a-f]{4}  ((?:[0-9a-f]{2} ?){1,16})", example, re.M)
        )
    )
    batch = Batch(
        "collector-01",
        pseudonymize(b"example-lab-secret-0123456789abcdef", "alice@example.org"),
        (
            InputEvent(
                42,
                5_000_000_000,
                1_795_000_000_000_000_000,
                DeviceClass.KEYBOARD,
                1,
                KeyClass.LETTER,
                1,
                EventFlag.KEY_CLASS,
            ),
            InputEvent(43, 5_001_000_000, 1_795_000_000_001_000_000, DeviceClass.MOUSE, 2, 0, -3),
        ),
    )
    assert encode_batch(batch, codec=Codec.NONE) == dump
    assert len(dump) == 163


@pytest.mark.parametrize("codec", list(Codec))
def test_peek_matches_the_full_decode(codec: Codec):
    frame = encode_batch(_batch(), codec=codec)
    peek = peek_batch(frame)
    full = decode_batch(frame)
    assert peek.pseudonym == full.pseudonym
    assert peek.first_wall_ns == full.events[0].wall_ns
    assert (peek.header.first_seq, peek.header.count) == (full.first_seq, len(full.events))
    with pytest.raises(FrameError, match="crc32c"):
        peek_batch(_flip(frame, len(frame) - 2))


def test_threads_encode_decode_and_peek_at_once():
    """zstd contexts are per thread: shared ones corrupt concurrent work (the sink runs threads)."""

    frames = [encode_batch(_batch(cid=f"c{i}")) for i in range(8)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(300):
                frame = frames[n % len(frames)]
                assert peek_batch(frame).header.collector_id == f"c{n % len(frames)}"
                assert decode_batch(frame).collector_id == f"c{n % len(frames)}"
                assert decode_batch(encode_batch(_batch(cid=f"t{n}"))).collector_id == f"t{n}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def _v1_frame(batch: Batch) -> bytes:
    """A version 1 frame as the first collectors wrote it (records one after another)."""
    raw = batch.pseudonym + encode_events_v1(batch.events)
    cid = batch.collector_id.encode().ljust(32, b"\0")
    header = bytearray(HEADER.pack(b"CLAB", 1, 0, 0, cid, batch.first_seq, len(batch.events), 0,
                                   len(raw), len(raw), 0))  # fmt: skip
    struct.pack_into("<I", header, 64, crc32c.crc32c(raw, crc32c.crc32c(bytes(header[:64]))))
    return bytes(header) + raw


def test_version_1_frames_still_decode_and_peek():
    batch = Batch("collector-01", PSEUDONYM, (*_events(n=5), ContextEvent(105, 1, 2, "xterm", "t")))
    frame = _v1_frame(batch)
    assert read_header(frame).version == 1
    assert decode_batch(frame) == batch
    assert peek_batch(frame).pseudonym == PSEUDONYM


def test_version_2_round_trips_mixed_events_and_negative_deltas():
    events = (
        InputEvent(7, 9_000, 10**18, DeviceClass.MOUSE, 2, 0, -(2**31)),
        ContextEvent(8, 8_000, 10**18 + 5, "firefox", "Docs \u2014 caf\u00e9", EventFlag.REDACTED),
        InputEvent(
            9, 2**63 - 1, -5, DeviceClass.TOUCHPAD, 3, 0xFFFF, 2**31 - 1, EventFlag.SYNTHETIC
        ),
    )
    batch = Batch("c1", PSEUDONYM, events)
    for codec in Codec:
        assert decode_batch(encode_batch(batch, codec=codec)) == batch


def test_version_2_trailing_or_missing_bytes_are_named():
    frame = encode_batch(_batch(), codec=Codec.NONE)
    header = read_header(frame)
    for payload, needle in ((frame[68:] + b"\0", "bytes follow the last column"),
                            (frame[68:-1], "column is truncated")):  # fmt: skip
        h = bytearray(HEADER.pack(b"CLAB", 2, 0, 0, b"collector-01".ljust(32, b"\0"),
                                  header.first_seq, header.count, 0, len(payload), len(payload), 0))  # fmt: skip
        struct.pack_into("<I", h, 64, crc32c.crc32c(payload, crc32c.crc32c(bytes(h[:64]))))
        with pytest.raises(FrameError, match=needle):
            decode_batch(bytes(h) + payload)


def test_version_2_carries_screenshots_between_other_events():
    from capturelab.schema import ImageFormat, ScreenshotEvent, encode_events_v1  # noqa: PLC0415

    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
    events = (
        ContextEvent(10, 1, 2, "foot", "shell"),
        ScreenshotEvent(11, 3, 4, jpeg, ImageFormat.JPEG),
        InputEvent(12, 5, 6, DeviceClass.MOUSE, 2, 0, 3),
        ScreenshotEvent(13, 7, 8, b"\x89PNG....", ImageFormat.PNG, EventFlag.SYNTHETIC),
        ContextEvent(14, 9, 10, "firefox", "Docs"),
    )
    batch = Batch("c1", PSEUDONYM, events)
    for codec in Codec:
        frame = encode_batch(batch, codec=codec)
        assert decode_batch(frame) == batch
        assert peek_batch(frame).header.count == 5
    with pytest.raises(InputError, match="version 1 has no screenshot"):
        encode_events_v1(events)
    with pytest.raises(InputError, match="max 524288"):
        ScreenshotEvent(1, 1, 1, b"x" * (512 * 1024 + 1), ImageFormat.PNG)
