"""``capturelab collector run|status|pause|resume`` and ``capturelab synth``."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capturelab import identity
from capturelab.collector import synth
from capturelab.collector.config import load_config
from capturelab.collector.edge import EdgeFilter, number
from capturelab.consent import Scope
from capturelab.durable import write_atomic
from capturelab.errors import CapturelabError, InputError
from capturelab.schema import encode_events, train_dictionary

DEFAULT_CONFIG = Path("/etc/capturelab/collector.yml")
DEFAULT_TRAINING_SCOPES = frozenset({Scope.KEYS_TIMING, Scope.MOUSE})


def cmd_run(args: argparse.Namespace) -> int:
    from capturelab.collector.daemon import Collector  # noqa: PLC0415 - librdkafka only here

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    Collector(load_config(args.config)).run(max_seconds=args.max_seconds)
    return 0


def ask(socket_path: Path, command: str, timeout: float = 3.0) -> dict[str, Any]:
    """One request on the daemon's control socket; CapturelabError when nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise CapturelabError(
                f"the collector daemon does not answer on {socket_path} ({exc.strerror or exc}): "
                "is capturelab-collector running?"
            ) from None
    reply: dict[str, Any] = json.loads(data)
    return reply


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        doc = ask(config.control_socket, "status")["status"]
        live = True
    except CapturelabError:
        try:
            doc = json.loads(config.status_path.read_text())
        except FileNotFoundError:
            raise InputError(
                f"{config.status_path} does not exist and the daemon does not answer: the "
                f"collector has not run with {args.config}"
            ) from None
        live = False
    doc["live"] = live
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(render_status(doc))
    return 0


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return f"{datetime.fromtimestamp(ts, UTC).isoformat(timespec='seconds')} ({time.time() - ts:.0f} s ago)"


def _withheld(counters: dict[str, int]) -> str:
    keys_n, clicks = counters.get("excluded_keys", 0), counters.get("excluded_clicks", 0)
    other, shots = counters.get("excluded_other", 0), counters.get("screenshots_excluded", 0)
    spans = counters.get("excluded_spans", 0)
    return f"{keys_n} keys, {clicks} clicks, {other} other, {shots} screenshots in {spans} spans"


def render_status(doc: dict[str, Any]) -> str:
    consent, spool, delivery = doc["consent"], doc["spool"], doc["delivery"]
    counters = doc.get("counters", {})
    stale = "" if doc.get("live") else " (daemon not answering: last status file)"
    full = " (FULL)" if spool["full"] else ""
    rows = [
        ("collector", f"{doc['collector_id']}{stale}"),
        ("state", f"{doc['state']}: {doc['reason']}"),
        ("consent", f"{consent['status']}, until {consent['expires'] or '-'} ({consent['lawful_basis'] or '-'})"),
        ("scopes", ", ".join(consent["scopes"]) or "-"),
        ("frame key", doc.get("frame_key", "-")),
        ("secure input", ", ".join(doc["secure_input"]) or "off"),
        ("capturing nothing", ", ".join(doc.get("excluded", [])) or "no (no excluded window, lock or unknown focus)"),
        ("withheld (excluded)", _withheld(counters)),
        ("lock screen check", doc.get("lock_screen_check", "-")),
        ("focus source", doc.get("focus_source", "-")),
        ("screenshots", doc.get("screenshots", "off")),
        ("spool", f"{spool['items']} items, {spool['bytes']} of {spool['max_bytes']} bytes{full}"),
        ("last delivery", _ago(delivery.get("last_delivery"))),
        ("delivery error", delivery.get("last_error") or "-"),
        ("events/s", str(doc["events_per_s"])),
        ("events read / sealed", f"{counters.get('read', 0)} / {counters.get('sealed_events', 0)}"),
        ("malformed (quarantined)", str(counters.get("malformed", 0))),
        ("devices", "; ".join(f"{p}: {s}" for p, s in doc["devices"].items()) or "-"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_pause(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    reply = ask(config.control_socket, "pause" if args.command_name == "pause" else "resume")
    if not reply.get("ok"):
        raise CapturelabError(f"the collector refused: {reply.get('error')}")
    modes = ", ".join(reply["secure_input"]) or "off"
    print(f"secure input: {modes}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    if not 0 < args.duration <= 3600:
        raise InputError(f"--duration must be 0-3600 seconds, got {args.duration}")
    if args.speed < 0:
        raise InputError(
            f"--speed must be >= 0 (0: as fast as the reader takes it), got {args.speed}"
        )
    if not 10 <= args.mouse_hz <= 8000:
        raise InputError(f"--mouse-hz must be 10-8000, got {args.mouse_hz}")
    session = synth.build_session(
        args.seed,
        args.duration,
        wpm=args.wpm,
        mouse_hz=args.mouse_hz,
        canaries=not args.no_canaries,
    )
    injector = synth.open_injector(args.inject_dir, timeout_s=args.drain_timeout)
    try:
        written = synth.play(session, injector, args.speed)
        drained = synth.wait_drained(injector, args.drain_timeout)
    finally:
        injector.close()
    manifest = {"seed": args.seed, "duration_s": args.duration, "written": written,
                "drained": drained, **session.manifest()}  # fmt: skip
    if args.manifest:
        args.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps({k: v for k, v in manifest.items() if k != "canaries"}), file=sys.stderr)
    if not drained:
        raise CapturelabError(
            f"the collector did not read everything within {args.drain_timeout:.0f} s"
        )
    return 0


def cmd_train_dictionary(args: argparse.Namespace) -> int:
    """A zstd dictionary trained on batches as the collector seals them from synth sessions."""
    if not 60 <= args.seconds <= 36_000:
        raise InputError(f"--seconds must be 60..36000, got {args.seconds}")
    if not 1024 <= args.size <= 1 << 20:
        raise InputError(f"--size must be 1024..1048576 bytes, got {args.size}")
    samples: list[bytes] = []
    seq = 0
    for seed in range(args.seed, args.seed + max(1, int(args.seconds // 600))):
        session = synth.build_session(seed, min(args.seconds, 600), mouse_hz=args.mouse_hz)
        edge = EdgeFilter(DEFAULT_TRAINING_SCOPES)
        second = -1
        for t, device, etype, code, value in sorted([*session.keyboard, *session.mouse]):
            if t // 10**9 != second and len(edge.out) >= 256:
                events = number(edge.out, seq)
                edge.out, seq = [], events[-1].seq + 1
                samples.append(encode_events(events))
            second = t // 10**9
            edge.process(device, (t // 10**9, t % 10**9 // 1000, etype, code, value), t)
    dictionary = train_dictionary(samples, size=args.size)
    args.out.write_bytes(dictionary.as_bytes())
    print(
        f"{args.out}: dictionary id {dictionary.dict_id()}, {len(samples)} batches, {args.size} bytes"
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Read a collector config as the daemon would (the role validates each render with this)."""
    load_config(args.path)
    print(f"{args.path}: a valid collector config")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """This collector's frame-signing key: created once (0600), never replaced; the public half
    is (re)written for the controller to certify (``capturelab consent certify``)."""
    key, created = identity.ensure_key(args.key)
    try:
        same = args.public.read_bytes() == key.public_pem()
    except OSError:
        same = False
    if not same:
        write_atomic(args.public, key.public_pem())
        args.public.chmod(0o644)
    state = "created" if created else "exists"
    print(f"collector key {key.key_id} {state}: private {args.key} (0600), public {args.public}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collector", help="the edge capture daemon (Pi 5)")
    csub = p.add_subparsers(dest="collector_command", metavar="SUBCOMMAND", required=True)
    run = csub.add_parser("run", help="run the daemon (systemd runs this)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    run.set_defaults(handler=cmd_run)
    check = csub.add_parser(
        "check-config", help="read a config as the daemon would; exit 2 names the field"
    )
    check.add_argument("path", type=Path)
    check.set_defaults(handler=cmd_check_config)
    keygen = csub.add_parser("keygen", help="this collector's frame-signing key (never replaced)")
    keygen.add_argument("--key", type=Path, required=True, help="the private key file (0600)")
    keygen.add_argument("--public", type=Path, required=True, help="its public half (PEM)")
    keygen.set_defaults(handler=cmd_keygen)
    status = csub.add_parser("status", help="consent, scopes, spool depth, last delivery, events/s")
    status.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)
    for name, text in (("pause", "secure input on: no key content leaves (until resume)"),
                       ("resume", "secure input off (a secret prompt or the chord may still hold it)")):  # fmt: skip
        cmd = csub.add_parser(name, help=text)
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        cmd.set_defaults(handler=cmd_pause, command_name=name)

    train = csub.add_parser("train-dictionary", help="a zstd dictionary for small batches")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--seconds", type=float, default=1800, help="synth input to train on")
    train.add_argument("--size", type=int, default=16384, help="dictionary bytes")
    train.add_argument("--mouse-hz", type=int, default=125)
    train.add_argument("--seed", type=int, default=1000)
    train.set_defaults(handler=cmd_train_dictionary)

    s = sub.add_parser("synth", help="inject a realistic synthetic session (uinput or FIFOs)")
    s.add_argument("--inject-dir", type=Path, default=None,
                   help="the collector's inject_dir (default: /dev/uinput when it exists)")  # fmt: skip
    s.add_argument("--duration", type=float, default=30.0, help="seconds of session (default 30)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as read")
    s.add_argument("--wpm", type=float, default=52.0)
    s.add_argument("--mouse-hz", type=int, default=125)
    s.add_argument("--no-canaries", action="store_true")
    s.add_argument("--manifest", type=Path, default=None, help="write counts and canaries here")
    s.add_argument("--drain-timeout", type=float, default=30.0)
    s.set_defaults(handler=cmd_synth)
