"""Running external commands for the harness: every long step shows its output as it goes."""

from __future__ import annotations

import contextlib
import contextvars
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from capturelab.errors import CapturelabError, HostEnvironmentError

# Where run() sends a streamed command's output in this thread (None: the terminal). Builds that
# run side by side (images.build_all) each write to a log of their own.
_STREAM_LOG: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "stream_log", default=None
)


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Stream the output of run() in this context into ``log`` (appended), not the terminal."""
    log.parent.mkdir(parents=True, exist_ok=True)
    token = _STREAM_LOG.set(log)
    try:
        yield
    finally:
        _STREAM_LOG.reset(token)


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n(the end of {log})\n" + "\n".join(tail)


def say(message: str) -> None:
    """A progress line on stderr, so stdout stays clean for machine-readable output."""
    print(f"[capturelab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stream: bool = True,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
) -> str:
    """Run ``argv``; stream its output when ``stream`` (long steps), else capture and return it.

    A failure raises CapturelabError naming ``what`` was being done, the command and the end of
    its output, so the user sees the reason without re-running anything.
    """
    say(f"{what}: {shlex.join(argv)}")
    started = time.monotonic()
    log = _STREAM_LOG.get() if stream else None
    try:
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(log.open("ab")) if log else None
            proc = subprocess.run(
                argv,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                input=input_bytes,
                capture_output=not stream,
                stdout=sink,
                stderr=subprocess.STDOUT if sink else None,
                timeout=timeout,
                check=False,
            )
        output = "" if stream else proc.stdout.decode(errors="replace")
    except FileNotFoundError as exc:
        raise CapturelabError(f"{what}: command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CapturelabError(
            f"{what}: timed out after {timeout:.0f} s: {shlex.join(argv)}"
        ) from exc
    if proc.returncode != 0:
        tail = _log_tail(log) if log else ""
        if not stream:
            err = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-15:]
            tail = "\n" + "\n".join(err) if err else ""
        raise CapturelabError(f"{what} failed (exit {proc.returncode}): {shlex.join(argv)}{tail}")
    if stream:
        say(f"{what}: done in {time.monotonic() - started:.0f} s")
    return output


def venv_tool(name: str) -> str:
    """A console script of this interpreter's venv (ansible, pyinfra, ...), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise HostEnvironmentError(
            f"{name} is not installed: run `make venv` (the project's toolchain)"
        )
    return found


def succeeds(argv: Sequence[str], timeout: float = 30) -> bool:
    """True when ``argv`` exits 0; a missing program counts as failure."""
    try:
        return (
            subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
