"""capturelab synth: the session model, the canaries, and the injection path."""

from __future__ import annotations

import re
import statistics
import time
from itertools import pairwise
from pathlib import Path

import pytest

from capturelab import keys
from capturelab.cli import main
from capturelab.collector import evdev, synth
from capturelab.redact import _luhn
from capturelab.schema import DeviceClass


def test_typing_is_about_52_wpm_with_bursts_and_the_mouse_moves_at_125_hz() -> None:
    session = synth.build_session(3, 300)
    assert 48 <= session.manifest()["wpm_while_typing"] <= 56
    presses = [t for t, d, ty, _c, v in session.keyboard if ty == keys.EV_KEY and v == 1]
    gaps = [b - a for a, b in pairwise(presses) if b - a < 2e9]
    assert statistics.quantiles(gaps, n=10)[0] < 0.6 * statistics.median(gaps)  # bursts
    reports = [t for t, _d, ty, _c, _v in session.mouse if ty == keys.EV_SYN]
    steps = [b - a for a, b in pairwise(reports)]
    assert abs(statistics.median(steps) - 8_000_000) < 100_000  # 125 Hz, a few per cent jitter
    assert min(steps) >= 7_600_000 and max(s for s in steps if s < 20_000_000) <= 8_400_000


def test_the_same_seed_gives_the_same_session() -> None:
    a, b = synth.build_session(9, 60), synth.build_session(9, 60)
    assert a.keyboard == b.keyboard and a.mouse == b.mouse
    assert synth.build_session(10, 60).keyboard != a.keyboard


def test_canaries_are_fake_and_well_formed() -> None:
    canaries = {c.kind: c.value for c in synth.build_session(11, 90).canaries}
    assert set(canaries) == set(synth.CANARY_KINDS)
    digits = canaries["card"].replace(" ", "")
    assert digits.startswith("4000") and len(digits) == 16 and _luhn(digits)
    assert re.fullmatch(r"canary\.[0-9a-f]{6}@example\.org", canaries["email"])


def _typed(session: synth.Session) -> str:
    shift, out = 0, []
    for _t, _d, etype, code, value in session.keyboard:
        if etype != keys.EV_KEY:
            continue
        if code in keys.SHIFTS:
            shift += 1 if value == 1 else -1 if value == 0 else 0
        elif value == 1 and code in keys.TEXT:
            out.append(keys.TEXT[code][1 if shift else 0])
    return "".join(out)


@pytest.mark.parametrize("seconds", [40, 90])
def test_every_session_plants_every_kind_and_counts_the_excluded_presses(seconds: int) -> None:
    for seed in range(1000, 1040):
        session = synth.build_session(seed, seconds)
        assert [c.kind for c in session.canaries] == list(synth.CANARY_KINDS), seed
        assert any(phrase in _typed(session) for phrase in synth.PHRASES), seed
        vault = next(c.value for c in session.canaries if c.kind == "excluded_window")
        # its characters, enter and a click: what the collector must withhold
        presses = session.manifest()["excluded_presses"]
        assert presses["clicks"] == 1
        assert presses["keys"] == len(vault) + 1 + sum(ch.isupper() for ch in vault)


def test_a_short_session_plants_the_first_kinds_and_is_not_stretched() -> None:
    for seed in range(1000, 1040):
        session = synth.build_session(seed, 8)
        kinds = [c.kind for c in session.canaries]
        assert kinds == list(synth.CANARY_KINDS[: len(kinds)]), seed
        assert session.merged()[-1][0] < 20e9, seed


def test_the_bench_stream_is_kernel_input_events() -> None:
    from capturelab.bench.collector import SEAL, session_stream  # noqa: PLC0415

    reads, length, peak = session_stream(10, 125, 1)
    session = synth.build_session(1, 10, mouse_hz=125)
    records = b"".join(data for device, data in reads if device != SEAL)
    assert len(records) == evdev.EVENT_SIZE * (len(session.keyboard) + len(session.mouse))
    sec, usec, etype, _code, _value = evdev.INPUT_EVENT.unpack_from(records)
    assert sec >= 1_700_000_000 and 0 <= usec < 1_000_000 and etype == keys.EV_MSC
    assert length >= 10 and peak > 0 and reads[-1] == (SEAL, b"")  # the last segment may overrun


def test_fifo_injection_is_read_like_a_device(tmp_path: Path) -> None:
    injector = synth.FifoInjector(tmp_path)
    devices = evdev.discover_injected(tmp_path)
    assert {d.device for d in devices} == {DeviceClass.KEYBOARD, DeviceClass.MOUSE}
    reader = evdev.DeviceReader(next(d for d in devices if d.device is DeviceClass.KEYBOARD))
    reader.open()
    record = evdev.pack(int(time.time()), 5, keys.EV_KEY, 30, 1)
    injector.key(DeviceClass.KEYBOARD, record[:10])  # a partial write waits for the rest
    assert list(reader.read() or []) == []
    injector.key(DeviceClass.KEYBOARD, record[10:])
    assert [r[2:] for r in reader.read() or []] == [(keys.EV_KEY, 30, 1)]
    assert injector.drained()
    reader.close()
    injector.close()


def test_synth_cli_names_bad_arguments_and_a_missing_uinput(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--duration", "0"]) == 2
    assert "--duration" in capsys.readouterr().err
    if not Path("/dev/uinput").exists():
        assert main(["synth", "--duration", "1"]) == 2
        assert "/dev/uinput does not exist" in capsys.readouterr().err


def test_synth_cli_times_out_when_nobody_reads(tmp_path: Path, capsys) -> None:
    code = main(["synth", "--inject-dir", str(tmp_path), "--duration", "5", "--speed", "0",
                 "--drain-timeout", "0.3", "--manifest", str(tmp_path / "m.json")])  # fmt: skip
    assert code == 2
    assert "did not read the injected events within 0.3 s" in capsys.readouterr().err


def test_sysfs_classification(tmp_path: Path) -> None:
    def node(name: str, ev: str, key: str, rel: str = "0", abs_: str = "0") -> None:
        caps = tmp_path / name / "device" / "capabilities"
        caps.mkdir(parents=True)
        for f, v in (("ev", ev), ("key", key), ("rel", rel), ("abs", abs_)):
            (caps / f).write_text(v + "\n")
        (tmp_path / name / "device" / "name").write_text(f"{name} device\n")

    # keyboard: EV_KEY with KEY_A (30), KEY_Z (44), KEY_SPACE (57) in the low word
    node("event0", "120013", f"{(1 << 30) | (1 << 44) | (1 << 57):x}")
    # mouse: EV_REL, REL_X/REL_Y, BTN_LEFT (0x110 = word 4 of 64-bit words)
    node("event1", "17", "10000 0 0 0 0", "103")
    node("event2", "3", "0")  # a power button: not read
    found = {d.path.name: d.device for d in evdev.discover(tmp_path, Path("/dev/input"))}
    assert found == {"event0": DeviceClass.KEYBOARD, "event1": DeviceClass.MOUSE}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ((0, 2_000_000, 1, 30, 1), "usec"),
        ((0, 0, 0x40, 0, 0), "EV_MAX"),
        ((0, 0, 1, 0x300, 1), "KEY_MAX"),
        ((0, 0, 1, 30, 3), "key value 3"),
    ],
)
def test_malformed_records_say_why(raw: evdev.Raw, why: str) -> None:
    assert why in (evdev.check_raw(raw, DeviceClass.KEYBOARD) or "")


def test_uinput_constants_match_linux_uinput_h() -> None:
    """/dev/uinput is absent here; the legacy setup struct and ioctls are checked by value."""

    def ioc(direction: int, nr: int, size: int) -> int:  # linux/ioctl.h on x86-64 and arm64
        return (direction << 30) | (size << 16) | (ord("U") << 8) | nr

    assert synth.UINPUT_USER_DEV.size == 80 + 4 * 2 + 4 + 4 * 64 * 4  # struct uinput_user_dev
    assert ioc(0, 1, 0) == synth.UI_DEV_CREATE and ioc(0, 2, 0) == synth.UI_DEV_DESTROY
    assert ioc(1, 100, 4) == synth.UI_SET_EVBIT
    assert ioc(1, 101, 4) == synth.UI_SET_KEYBIT
    assert ioc(1, 102, 4) == synth.UI_SET_RELBIT
