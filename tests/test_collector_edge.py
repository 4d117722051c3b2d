"""The edge policy: what of a key or mouse event may leave the collector process."""

from __future__ import annotations

import time

from capturelab import keys
from capturelab.collector import evdev
from capturelab.collector.edge import EdgeFilter
from capturelab.consent import Scope
from capturelab.exclusions import Exclusions
from capturelab.schema import DeviceClass, EventFlag, ImageFormat, KeyClass

KB, MOUSE = DeviceClass.KEYBOARD, DeviceClass.MOUSE
K = keys.K
TEXT_SCOPES = {Scope.KEYS_TIMING, Scope.KEYS_TEXT, Scope.MOUSE, Scope.CONTEXT}


def raw(etype: int, code: int, value: int) -> evdev.Raw:
    t = time.time_ns()
    return (t // 10**9, t % 10**9 // 1000, etype, code, value)


def type_text(edge: EdgeFilter, text: str, enter: bool = True) -> None:
    for ch in text:
        code, shifted = keys.CHAR_TO_KEY[ch]
        if shifted:
            edge.process(KB, raw(keys.EV_KEY, K["KEY_LEFTSHIFT"], 1), 0)
        edge.process(KB, raw(keys.EV_MSC, 4, 0x70000 + code), 0)
        edge.process(KB, raw(keys.EV_KEY, code, 1), 0)
        edge.process(KB, raw(keys.EV_SYN, 0, 0), 0)
        edge.process(KB, raw(keys.EV_KEY, code, 0), 0)
        if shifted:
            edge.process(KB, raw(keys.EV_KEY, K["KEY_LEFTSHIFT"], 0), 0)
    if enter:
        edge.process(KB, raw(keys.EV_KEY, K["KEY_ENTER"], 1), 0)
        edge.process(KB, raw(keys.EV_KEY, K["KEY_ENTER"], 0), 0)


def rebuilt(edge: EdgeFilter) -> str:
    """What a reader of the output could type back (content keys only, no classes)."""
    shift, out = False, []
    for item in edge.out:
        if len(item) != 7 or item[3] != keys.EV_KEY:
            continue
        code, value = item[4], item[5]
        if code in keys.SHIFTS:
            shift = value != 0
        elif value == 1 and code in keys.TEXT:
            out.append(keys.TEXT[code][1 if shift else 0])
    return "".join(out)


def key_codes(edge: EdgeFilter) -> list[int]:
    return [i[4] for i in edge.out if len(i) == 7 and i[3] == keys.EV_KEY]


def test_keys_timing_leaves_classes_only_and_drops_scan_codes() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING})
    type_text(edge, "Hi 42.")
    codes = key_codes(edge)
    assert codes and all(c >= KeyClass.UNKNOWN for c in codes)
    assert KeyClass.LETTER in codes and KeyClass.DIGIT in codes and KeyClass.MODIFIER in codes
    assert KeyClass.PUNCTUATION in codes and KeyClass.ENTER in codes
    assert all(i[3] != keys.EV_MSC for i in edge.out if len(i) == 7)
    assert all(i[6] & EventFlag.KEY_CLASS for i in edge.out if len(i) == 7 and i[3] == keys.EV_KEY)
    assert edge.counters.dropped_by_scope == 6  # one scan code per key


def test_mouse_needs_its_scope() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING})
    edge.process(MOUSE, raw(keys.EV_REL, keys.REL_X, 5), 0)
    assert edge.out == [] and edge.counters.dropped_by_scope == 1
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.MOUSE})
    edge.process(MOUSE, raw(keys.EV_REL, keys.REL_X, 5), 0)
    assert [i[3:6] for i in edge.out] == [(keys.EV_REL, keys.REL_X, 5)]


def test_keys_text_keeps_ordinary_text() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    type_text(edge, "git status")
    assert rebuilt(edge) == "git status"
    assert edge.counters.redacted_keys == 0


def test_keys_text_scrubs_card_email_and_labelled_password() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    type_text(edge, "card 4000 0012 3456 7899 ok")
    type_text(edge, "mail canary.ab12@example.org now")
    type_text(edge, "password: Hunter2xyz")
    text = rebuilt(edge)
    assert "card" in text and "ok" in text and "mail" in text and "now" in text
    for secret in ("4000", "7899", "canary", "example.org", "Hunter2xyz", "unter"):
        assert secret not in text, (secret, text)
    redacted = [i for i in edge.out if len(i) == 7 and i[6] & EventFlag.REDACTED]
    assert redacted and all(i[4] >= KeyClass.UNKNOWN for i in redacted)
    # every redacted press has a redacted release: the release would name the key otherwise
    assert sum(1 for i in redacted if i[5] == 1) == sum(1 for i in redacted if i[5] == 0)
    # counted by kind (the collector's status; the validation report plots them)
    assert set(edge.counters.findings) >= {"CARD", "EMAIL", "PASSWORD"}
    assert sum(edge.counters.findings.values()) >= 3


def test_label_before_an_idle_flush_still_marks_the_secret() -> None:
    edge = EdgeFilter(TEXT_SCOPES, idle_flush_ns=1)
    type_text(edge, "password: ", enter=False)
    edge.tick(time.monotonic_ns() + 10**9)  # idle: the buffer is judged and handed out
    type_text(edge, "s3cretValue")
    assert "s3cret" not in rebuilt(edge)


def test_deleted_secret_character_is_redacted_too() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    type_text(edge, "password: abcdX", enter=False)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_BACKSPACE"], 1), 0)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_BACKSPACE"], 0), 0)
    type_text(edge, "Y")
    codes = key_codes(edge)
    assert not {K["KEY_X"], K["KEY_Y"], K["KEY_B"], K["KEY_C"]} & set(codes)  # "password" has a, d


def test_secret_prompt_focus_masks_every_key_and_its_late_release() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    edge.context("xterm", "[sudo] password for alice", 0, time.time_ns())
    assert edge.secure
    edge.process(KB, raw(keys.EV_KEY, K["KEY_Q"], 1), 0)
    edge.context("xterm", "alice@lab: ~", 0, time.time_ns())  # focus leaves with Q still held
    assert not edge.secure
    edge.process(KB, raw(keys.EV_KEY, K["KEY_Q"], 0), 0)
    pressed = [i for i in edge.out if len(i) == 7]
    assert [(i[4], i[5]) for i in pressed] == [(KeyClass.UNKNOWN, 1), (KeyClass.UNKNOWN, 0)]
    assert all(i[6] & EventFlag.SECURE_INPUT for i in pressed)


def test_pause_chord_toggles_secure_input_and_command_too() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    chord = [K["KEY_LEFTCTRL"], K["KEY_LEFTALT"], K["KEY_PAUSE"]]
    for code in chord:
        edge.process(KB, raw(keys.EV_KEY, code, 1), 0)
    for code in reversed(chord):
        edge.process(KB, raw(keys.EV_KEY, code, 0), 0)
    assert edge.secure_reasons == {"chord"}
    before = len(edge.out)
    type_text(edge, "abc", enter=False)
    assert all(i[4] == KeyClass.UNKNOWN for i in edge.out[before:] if i[3] == keys.EV_KEY)
    for code in chord:
        edge.process(KB, raw(keys.EV_KEY, code, 1), 0)
    assert not edge.secure
    edge.set_secure("command", True)
    assert edge.secure_reasons == {"command"}


def test_secure_input_hides_classes_under_keys_timing_too() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING})
    edge.set_secure("command", True)
    type_text(edge, "a1", enter=False)
    assert set(key_codes(edge)) == {KeyClass.UNKNOWN}


def test_context_title_is_redacted_and_needs_its_scope() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    edge.context("thunderbird", "Mail to bob@example.org", 1, 2)
    assert edge.out == [(1, 2, "thunderbird", "Mail to [EMAIL]", int(EventFlag.REDACTED))]
    edge = EdgeFilter({Scope.KEYS_TIMING})
    edge.context("firefox", "Docs", 1, 2)
    assert edge.out == []


def test_key_classes_cover_the_keyboard() -> None:
    assert keys.key_class(K["KEY_A"]) is KeyClass.LETTER
    assert keys.key_class(K["KEY_KP5"]) is KeyClass.DIGIT
    assert keys.key_class(K["KEY_SLASH"]) is KeyClass.PUNCTUATION
    assert keys.key_class(K["KEY_F5"]) is KeyClass.FUNCTION
    assert keys.key_class(K["KEY_LEFT"]) is KeyClass.NAVIGATION
    assert keys.key_class(K["KEY_RIGHTMETA"]) is KeyClass.MODIFIER
    assert keys.key_class(0x2FF) is KeyClass.OTHER


def test_screenshots_need_their_scope_and_no_secure_input() -> None:
    from capturelab.schema import MAX_IMAGE_BYTES, ImageFormat  # noqa: PLC0415

    edge = EdgeFilter({Scope.KEYS_TIMING})
    edge.screenshot(b"jpeg", ImageFormat.JPEG, 1, 2)
    assert edge.out == [] and edge.counters.screenshots_withheld == 1
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.SCREENSHOTS})
    edge.screenshot(b"jpeg", ImageFormat.JPEG, 1, 2)
    assert edge.out == [(1, 2, b"jpeg", ImageFormat.JPEG, 0)]
    edge.context("xterm", "[sudo] password for alice", 3, 4)
    assert not edge.wants_screenshot()
    edge.screenshot(b"jpeg", ImageFormat.JPEG, 5, 6)
    edge.set_secure("prompt", False)
    edge.screenshot(b"x" * (MAX_IMAGE_BYTES + 1), ImageFormat.PNG, 7, 8)
    assert edge.counters.screenshots == 1 and edge.counters.screenshots_withheld == 2


def test_person_names_at_the_edge_when_configured() -> None:
    from capturelab.names import person_recogniser  # noqa: PLC0415 - the names extra (dev has it)

    plain = EdgeFilter(TEXT_SCOPES)
    type_text(plain, "thanks, Kevin")
    assert "Kevin" in rebuilt(plain)
    with_names = EdgeFilter(TEXT_SCOPES, extra_recognisers=[person_recogniser()])
    type_text(with_names, "thanks, Kevin")
    assert "thanks," in rebuilt(with_names) and "Kevin" not in rebuilt(with_names)
    with_names.context("thunderbird", "Reply to Alice Smith", 1, 2)
    assert with_names.out[-1][3] == "Reply to [PERSON]"


# --- excluded windows and lock screens --------------------------------------------------------


def click(edge: EdgeFilter) -> None:
    for value in (1, 0):
        edge.process(MOUSE, raw(keys.EV_KEY, keys.BTN_LEFT, value), 0)
        edge.process(MOUSE, raw(keys.EV_SYN, 0, 0), 0)
    edge.process(MOUSE, raw(keys.EV_REL, keys.REL_X, 5), 0)


def contexts(edge: EdgeFilter) -> list[tuple[str, str, int]]:
    return [(i[2], i[3], i[4]) for i in edge.out if len(i) == 5 and isinstance(i[2], str)]


def test_an_excluded_window_withholds_every_key_click_and_screenshot() -> None:
    edge = EdgeFilter(TEXT_SCOPES | {Scope.SCREENSHOTS})
    edge.context("xterm", "alice@lab", 0, 0)
    type_text(edge, "ls", enter=False)  # waits in the text buffer at the focus change
    edge.context("org.keepassxc.KeePassXC", "Passwords.kdbx - KeePassXC", 0, 0)
    before = len(edge.out)
    type_text(edge, "Hunter2!")
    click(edge)
    edge.screenshot(b"\xff\xd8jpeg", ImageFormat.JPEG, 0, 0)
    assert len(edge.out) == before, "nothing leaves while the password manager has focus"
    assert edge.excluded and not edge.wants_screenshot()
    assert edge.screenshot_refusal() == "an excluded window has focus"
    edge.context("xterm", "alice@lab", 0, 0)
    type_text(edge, "pwd")
    assert rebuilt(edge) == "lspwd"
    assert contexts(edge) == [
        ("xterm", "alice@lab", 0),
        ("", "", int(EventFlag.EXCLUDED)),  # the mark: no app, no title
        ("xterm", "alice@lab", 0),
    ]
    c = edge.counters
    assert (c.excluded_spans, c.excluded_keys, c.excluded_clicks) == (
        1,
        11,
        1,
    )  # 2 shifts+8+enter
    assert c.screenshots_excluded == 1 and c.screenshots == 0
    assert c.excluded_other > 0


def test_a_key_held_into_or_out_of_an_excluded_window_never_shows() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    edge.context("firefox", "Docs", 0, 0)
    edge.context("firefox", "New Tab — Mozilla Firefox Private Browsing", 0, 0)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_A"], 1), 0)  # pressed in the private window
    edge.context("firefox", "Docs", 0, 0)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_A"], 2), 0)  # its repeat and release come after
    edge.process(KB, raw(keys.EV_KEY, K["KEY_A"], 0), 0)
    edge.process(MOUSE, raw(keys.EV_KEY, keys.BTN_LEFT, 1), 0)  # a fresh click is kept
    edge.flush()
    assert K["KEY_A"] not in key_codes(edge)
    assert [i[4] for i in edge.out if len(i) == 7] == [keys.BTN_LEFT]


def test_the_pause_chord_still_works_in_an_excluded_window() -> None:
    edge = EdgeFilter(TEXT_SCOPES)
    edge.context("my-vault", "", 0, 0)
    edge.set_excluded("window", True, 0, 0)
    for name in ("KEY_LEFTCTRL", "KEY_LEFTALT", "KEY_PAUSE"):
        edge.process(KB, raw(keys.EV_KEY, K[name], 1), 0)
    assert edge.secure_reasons == {"chord"}


def test_excluded_windows_follow_the_config_and_the_record_patterns() -> None:
    edge = EdgeFilter(TEXT_SCOPES, exclusions=Exclusions(titles=("Bank of",)))
    edge.context("firefox", "Bank of Nowhere — Mozilla Firefox", 0, 0)
    type_text(edge, "1234")
    edge.context("firefox", "Docs", 0, 0)
    assert rebuilt(edge) == "" and edge.counters.excluded_keys == 5
    assert all("Bank" not in app + title for app, title, _ in contexts(edge))


def test_a_lock_screen_withholds_everything_and_unlocking_reports_the_focus_again() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.MOUSE, Scope.CONTEXT})
    edge.context("xterm", "alice@lab", 0, 0)
    edge.set_excluded("lock screen", True, 0, 0)
    type_text(edge, "unlock me")
    edge.context("code", "main.py", 0, 0)  # focus moved while locked: nothing leaves
    assert edge.screenshot_refusal() == "the screen is locked"
    edge.set_excluded("lock screen", False, 0, 0)
    assert key_codes(edge) == []
    assert contexts(edge) == [
        ("xterm", "alice@lab", 0),
        ("", "", int(EventFlag.EXCLUDED)),
        ("code", "main.py", 0),
    ]


def test_without_the_context_scope_the_exclusion_still_holds_and_no_mark_leaves() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.MOUSE})
    edge.context("1Password", "Vault", 0, 0)
    type_text(edge, "secret")
    click(edge)
    edge.context("xterm", "", 0, 0)
    assert edge.out == [] and edge.counters.excluded_keys == 7


def test_a_lock_span_with_no_focus_known_ends_with_an_empty_focus() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.CONTEXT})
    edge.set_excluded("lock screen", True, 0, 0)
    edge.set_excluded("lock screen", False, 0, 0)
    type_text(edge, "ab", enter=False)
    assert contexts(edge) == [("", "", int(EventFlag.EXCLUDED)), ("", "", 0)]
    assert len(key_codes(edge)) == 4  # two presses, two releases: after the span, kept


def test_a_watching_filter_keeps_nothing_until_the_focus_is_known() -> None:
    edge = EdgeFilter(TEXT_SCOPES, watch_focus=True)
    assert edge.excluded_reasons == {"focus unknown"}
    assert edge.screenshot_refusal() == "the focused window is not known yet"
    type_text(edge, "before")
    click(edge)
    edge.context("xterm", "~", 0, 0)
    type_text(edge, "after", enter=False)
    edge.flush()
    assert rebuilt(edge) == "after" and contexts(edge) == [("xterm", "~", 0)]
    assert edge.counters.excluded_keys == 7 and edge.counters.excluded_clicks == 1


def test_a_key_held_into_a_span_is_released_there_and_its_real_release_withheld() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.MOUSE})  # no context scope: no mark either
    edge.context("xterm", "~", 0, 0)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_LEFTALT"], 1), 0)  # alt+tab into the vault
    edge.process(MOUSE, raw(keys.EV_KEY, keys.BTN_LEFT, 1), 0)  # a drag that goes on
    edge.process(KB, raw(keys.EV_KEY, K["KEY_TAB"], 1), 0)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_TAB"], 0), 0)
    edge.context("org.keepassxc.KeePassXC", "KeePassXC", 0, 0)
    released = [i for i in edge.out if len(i) == 7 and i[6] & EventFlag.EXCLUDED]
    assert [(i[2], i[5]) for i in released] == [(KB, 0), (MOUSE, 0)]  # class code, button
    assert released[0][4] == int(KeyClass.MODIFIER) and released[1][4] == keys.BTN_LEFT
    before = len(edge.out)
    edge.process(KB, raw(keys.EV_KEY, K["KEY_LEFTALT"], 0), 0)  # the real releases
    edge.process(MOUSE, raw(keys.EV_KEY, keys.BTN_LEFT, 0), 0)
    edge.context("xterm", "~", 0, 0)
    assert len(edge.out) == before
    edge.process(KB, raw(keys.EV_KEY, K["KEY_LEFTALT"], 1), 0)  # a fresh press is kept
    assert len(edge.out) == before + 1


def test_touches_count_as_other_not_as_clicks() -> None:
    edge = EdgeFilter({Scope.KEYS_TIMING, Scope.MOUSE})
    edge.context("keepassxc", "", 0, 0)
    edge.process(DeviceClass.TOUCHPAD, raw(keys.EV_KEY, keys.BTN_TOUCH, 1), 0)
    edge.process(MOUSE, raw(keys.EV_KEY, keys.BTN_RIGHT, 1), 0)
    assert (edge.counters.excluded_clicks, edge.counters.excluded_other) == (1, 1)


def test_a_new_filter_takes_over_the_exclusion_the_masks_and_the_counters() -> None:
    old = EdgeFilter(TEXT_SCOPES)
    old.context("xterm", "~", 0, 0)
    old.set_secure("command", True)
    old.process(KB, raw(keys.EV_KEY, K["KEY_A"], 1), 0)  # masked (secure) and still held
    old.context("org.keepassxc.KeePassXC", "KeePassXC", 0, 0)
    type_text(old, "x")
    old.flush()
    withheld = old.counters.excluded_keys
    new = EdgeFilter(TEXT_SCOPES, watch_focus=True)
    new.inherit(old)
    assert new.excluded_reasons == {"window"} and "command" in new.secure_reasons
    type_text(new, "still in it")  # no "a": KEY_A stays held from before the span
    assert new.out == [] and new.counters.excluded_keys == withheld + len("still in it") + 1
    new.context("xterm", "~", 0, 0)
    before = len(new.out)
    new.process(KB, raw(keys.EV_KEY, K["KEY_A"], 0), 0)  # pressed (masked) before: no code
    assert len(new.out) == before


def test_a_re_scope_without_the_mouse_releases_no_button_and_a_lost_release_is_forgotten() -> None:
    old = EdgeFilter(TEXT_SCOPES)
    old.context("xterm", "~", 0, 0)
    old.process(MOUSE, raw(keys.EV_KEY, keys.BTN_LEFT, 1), 0)
    new = EdgeFilter({Scope.KEYS_TEXT, Scope.CONTEXT})  # the mouse scope dropped
    new.inherit(old)
    new.out.clear()
    new.context("keepassxc", "", 0, 0)
    assert [i for i in new.out if len(i) == 7] == []
    new.process(KB, raw(keys.EV_KEY, K["KEY_B"], 1), 0)  # pressed in the vault...
    new.context("xterm", "~", 0, 0)  # ...its release lost (the devices were closed)
    new.process(KB, raw(keys.EV_KEY, K["KEY_B"], 1), 0)  # a fresh press is not withheld
    new.flush()
    assert K["KEY_B"] in key_codes(new)
