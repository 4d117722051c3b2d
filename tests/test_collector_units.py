"""Collector config errors, delivery failures and the spool bound, without a broker."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from collectorkit import Gate, collector_config, running, wait_for, write_consent
from confluent_kafka import KafkaError

from capturelab.collector import spool as spool_module
from capturelab.collector import synth
from capturelab.collector.config import load_config
from capturelab.collector.daemon import Collector
from capturelab.collector.delivery import Delivery
from capturelab.collector.spool import Spool
from capturelab.errors import HostEnvironmentError, InputError
from capturelab.schema import decode_batch


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"collector_id": "Bad Id"}, "field collector_id"),
        ({"spool_dir": "relative/path"}, "field spool_dir must be an absolute path"),
        ({"zstd_level": 30}, "field zstd_level must be 1-22"),
        ({"batch_interval_ms": 0}, "field batch_interval_ms must be an integer >= 10"),
        ({"context": "wayland"}, "field context 'wayland' is not one of"),
        ({"pause_chord": ["KEY_LEFTCTRL", "KEY_NOPE"]}, "pause_chord[1] 'KEY_NOPE'"),
        ({"secret_prompts": ["(unclosed"]}, "secret_prompts[0]"),
        ({"exclude": {"apps": ["ok", "(x"]}}, "field exclude.apps[1] '(x' is not a regular"),
        ({"exclude": {"title": ["x"]}}, "field exclude: unknown field(s) title (apps, titles)"),
        ({"lock_screens": ["swaylock", "kscreenlocker_greet"]}, "field lock_screens[1] 'kscr"),
        ({"lock_screens": "swaylock"}, "field lock_screens must be a list of process names"),
        ({"devices": []}, "field devices must be auto or a non-empty list"),
        ({"spool_max_bytes": 10}, "field spool_max_bytes must be an integer >= 1048576"),
        ({"surprise": 1}, "unknown field(s) surprise"),
        ({"security": {"username": "c1"}}, "security.password_file is required"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as err:
        collector_config(tmp_path, "127.0.0.1:9092", **change)
    assert message in str(err.value)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "collector.yml"
    path.write_text("collector_id: [unclosed\n")
    with pytest.raises(InputError, match=r"collector\.yml: collector config is not valid YAML"):
        load_config(path)


def test_malformed_consent_refuses_and_names_the_field(tmp_path: Path) -> None:
    config = collector_config(tmp_path, "127.0.0.1:9092")
    config.consent_file.write_text("participant_id: p1\nscopes: [keys:everything]\n")
    collector = Collector(config, producer_factory=Gate)
    collector.check_consent()
    assert collector.state == "refused"
    assert "scopes[0] 'keys:everything'" in collector.reason
    collector.shutdown(0)


def test_short_lab_secret_is_refused(tmp_path: Path) -> None:
    config = collector_config(tmp_path, "127.0.0.1:9092")
    config.lab_secret_file.write_text("short")
    with pytest.raises(InputError, match="holds 5 bytes: at least 16"):
        Collector(config, producer_factory=Gate)


def test_authentication_failure_keeps_the_item_and_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.put_batch(b"frame", next_seq=1)

    class Refusing(Gate):
        def poll(self, timeout: float) -> int:
            time.sleep(timeout)
            waiting, self.waiting = self.waiting, []
            self.config["error_cb"](
                KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error")
            )
            for _topic, _value, report in waiting:
                report(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
            return 0

    delivery = Delivery(spool, {}, "capture.events", "c1", producer_factory=Refusing)
    delivery.start()
    wait_for(lambda: delivery.snapshot()["failed_reports"] >= 1, "a failed report")
    delivery.stop(0.5)
    assert "authentication failed" in delivery.snapshot()["last_error"]
    assert spool.depth()[0] == 1  # nothing lost


def test_trained_dictionary_round_trip_from_collector_to_reader(tmp_path: Path) -> None:
    from capturelab.cli import main  # noqa: PLC0415
    from capturelab.schema import FrameError, decode_batch, load_dictionary, read_header  # noqa: PLC0415

    dict_path = tmp_path / "zstd.dict"
    assert main(["collector", "train-dictionary", "--out", str(dict_path), "--seconds", "120"]) == 0
    dictionary = load_dictionary(dict_path)
    config = collector_config(tmp_path, "127.0.0.1:9092", dictionary_file=str(dict_path))
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: len(c.readers) == 2, "capture")
        synth.play(synth.build_session(3, 10, canaries=False), injector, 0)
        assert synth.wait_drained(injector, 10)
        wait_for(c.settled, "delivery")
    injector.close()
    frames = [v for t, v in Gate.sent if t == "capture.events"]
    assert frames and all(read_header(f).dict_id == dictionary.dict_id() for f in frames)
    assert decode_batch(frames[0], dictionaries={dictionary.dict_id(): dictionary}).events
    with pytest.raises(FrameError, match="names a dictionary this reader lacks"):
        decode_batch(frames[0])


def test_a_file_that_is_not_a_dictionary_is_named(tmp_path: Path) -> None:
    from capturelab.schema import load_dictionary  # noqa: PLC0415

    bogus = tmp_path / "not.dict"
    bogus.write_bytes(b"hello")
    with pytest.raises(InputError, match=r"not\.dict is not a trained dictionary"):
        load_dictionary(bogus)
    with pytest.raises(InputError, match=r"missing\.dict: No such file"):
        load_dictionary(tmp_path / "missing.dict")


@pytest.fixture
def fake_grim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "bin" / "grim"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nprintf "\\377\\330\\377\\340fake-jpeg-for-$*"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-1")
    return script


@pytest.mark.parametrize("granted", [True, False])
def test_screenshots_only_with_the_scope(tmp_path: Path, fake_grim: Path, granted: bool) -> None:
    from capturelab.schema import ImageFormat, ScreenshotEvent, decode_batch  # noqa: PLC0415

    config = collector_config(
        tmp_path, "127.0.0.1:9092", screenshot_interval_s=5, screenshot_scale=0.25
    )
    write_consent(
        config.consent_file, ["keys:timing", "screenshots"] if granted else ["keys:timing"]
    )
    Gate.open, Gate.sent = True, []
    injector = synth.FifoInjector(config.inject_dir)
    injector.focus("xterm", "alice@lab")  # with a context source, nothing is taken before
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: c.screenshot_note != "waiting", "the first screenshot attempt")
        wait_for(c.settled, "delivery")
        note = c.status()["screenshots"]
    injector.close()
    shots = [e for t, v in Gate.sent if t == "capture.events" for e in decode_batch(v).events
             if isinstance(e, ScreenshotEvent)]  # fmt: skip
    if granted:
        assert note.startswith("taken") and shots
        assert shots[0].format is ImageFormat.JPEG and shots[0].image.startswith(b"\xff\xd8")
        assert b"-t jpeg -q 60 -s 0.25 -" in shots[0].image  # the configured grim arguments
    else:
        assert shots == [] and note == "withheld: the consent does not grant screenshots"


def test_screenshot_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"screenshot_interval_s must be 0 .off. or at least 5"):
        collector_config(tmp_path, "127.0.0.1:9092", screenshot_interval_s=1)
    with pytest.raises(InputError, match="screenshot_tool 'scrot' is not one of"):
        collector_config(tmp_path, "127.0.0.1:9092", screenshot_tool="scrot")


def test_person_names_setting(tmp_path: Path) -> None:
    assert collector_config(tmp_path, "127.0.0.1:9092", person_names=True).person_names
    with pytest.raises(InputError, match="field person_names must be true or false"):
        collector_config(tmp_path, "127.0.0.1:9092", person_names="yes")


def test_a_full_card_pauses_capture_through_consent_checks_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on a seal: capture pauses (devices closed), stays paused through every consent
    check until the file system has room, then resumes; every sealed event goes out once, in
    order, from sequence 0 (none burned by the failed writes)."""
    config = collector_config(tmp_path, "127.0.0.1:9092")
    write_consent(config.consent_file, ["keys:timing", "mouse"])
    Gate.open, Gate.sent = True, []
    room = {"bytes": 0}
    real = spool_module.write_synced

    def card(path: Path, data: bytes) -> None:
        if not room["bytes"] and path.suffix == ".batch":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(spool_module, "write_synced", card)
    monkeypatch.setattr(Spool, "_room", lambda self: room["bytes"])
    injector = synth.FifoInjector(config.inject_dir, write_timeout_s=2)
    with running(Collector(config, producer_factory=Gate)) as c:
        wait_for(lambda: len(c.readers) == 2, "capture")
        with contextlib.suppress(HostEnvironmentError):  # the daemon stopped reading: it paused
            synth.play(synth.build_session(3, 10, canaries=False), injector, 0)
        # The seal that failed says "paused" at once; the devices close in the loop's next pass.
        wait_for(lambda: c.state == "paused" and "No space left" in c.reason, "the pause")
        wait_for(lambda: c.readers == {}, "the devices to close")
        time.sleep(1.0)  # five consent checks (every 0.2 s)
        assert (c.state, c.readers) == ("paused", {}), c.reason
        assert c.status()["spool"]["full"]
        room["bytes"] = 1 << 40
        wait_for(lambda: c.state == "capturing" and len(c.readers) == 2, "the resume")
        wait_for(c.settled, "delivery")
        sealed = c.counters.sealed_events
    injector.close()
    seqs = [e.seq for t, v in Gate.sent if t == "capture.events" for e in decode_batch(v).events]
    assert sealed > 0 and seqs == list(range(sealed))


def test_check_config_names_the_file_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml  # noqa: PLC0415

    from capturelab.cli import main  # noqa: PLC0415

    config = collector_config(tmp_path, "127.0.0.1:9092")
    path = tmp_path / "collector.yml"
    data = {
        "collector_id": config.collector_id,
        "consent_file": str(config.consent_file),
        "consent_authority_file": str(config.consent_authority_file),
        "lab_secret_file": str(config.lab_secret_file),
        "spool_dir": str(config.spool_dir),
        "bootstrap_servers": "gw:9092",
        "exclude": {"apps": ["^signal$"], "titles": ["Bank of "]},
    }
    path.write_text(yaml.safe_dump(data))
    assert main(["collector", "check-config", str(path)]) == 0
    assert "a valid collector config" in capsys.readouterr().out
    data["exclude"] = {"titles": ["(Bank"]}
    path.write_text(yaml.safe_dump(data))
    assert main(["collector", "check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"collector config {path}: field exclude.titles[0] '(Bank' is not a regular" in err


def test_the_role_s_lock_screens_are_the_daemon_s(tmp_path: Path) -> None:
    import yaml  # noqa: PLC0415

    from capturelab.collector.context import DEFAULT_LOCK_SCREENS  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent / "roles" / "collector"
    defaults = yaml.safe_load((root / "defaults" / "main.yml").read_text())
    assert tuple(defaults["collector_lock_screens"]) == DEFAULT_LOCK_SCREENS
    assert collector_config(tmp_path, "gw:9092", lock_screens=[]).lock_screens == ()
