"""``capturelab bench storage``: fio's sequential write vs the sink's write path, same volume.

Reference: fio, sequential write, ``--bs 1M --iodepth 16 --numjobs 1 --ioengine libaio
--direct 1 --end_fsync 1`` (the documented defaults): what the array can take. Ours: the sink's
``SegmentStore`` appending real frames (about 64 KiB each, each one's CRC32C checked) with a sync
+ index write every ``flush_every`` frames, exactly as the service does between offset commits,
writing the way the service would on that volume (``direct_io``: O_DIRECT where supported). Both write the same
number of bytes into a scratch folder under ``--path``, removed afterwards. Kafka is not involved:
this measures the write path the consumer feeds.

A third run, the *ceiling*, puts only the CRC32C check in front of the sink's appender: the per-byte
work no sink that checks what it stores can skip, on this CPU. It tells a slow sink from a target that
the machine cannot reach (a CPU emulated by qemu TCG, for one).
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.queues
import os
import queue
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from capturelab.bench.gateway import synthetic_frames
from capturelab.errors import HostEnvironmentError, InputError
from capturelab.schema import COLLECTOR_ID_BYTES, HEADER_SIZE, frame_crc, seal_crc, stored_crc
from capturelab.sink.appender import (
    Appender,
    BufferedAppender,
    DirectAppender,
    Writer,
    direct_io_supported,
)
from capturelab.sink.store import SegmentStore

MIB = 1 << 20


@dataclass(frozen=True)
class FioSettings:
    block_kib: int = 1024
    iodepth: int = 16
    jobs: int = 1
    direct: bool = True
    ioengine: str = "libaio"


@dataclass(frozen=True)
class Throughput:
    bytes: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mib_per_s": round(self.mib_per_s, 2),
        }


def scratch(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise InputError(f"--path {path} is not a directory")
    out = path / f".capturelab-bench-{name}-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return out


def settle(seconds: float) -> None:
    """Flush every dirty page, then wait: a run must not pay for the previous run's writeback."""
    os.sync()
    time.sleep(seconds)


def run_fio(path: Path, size_mib: int, settings: FioSettings, timeout: float) -> Throughput:
    fio = shutil.which("fio")
    if fio is None:
        raise HostEnvironmentError("fio is not installed: apt-get install fio")
    work = scratch(path, "fio")
    try:
        argv = [
            fio,
            "--name=seqwrite",
            f"--directory={work}",
            "--rw=write",
            f"--bs={settings.block_kib}k",
            f"--iodepth={settings.iodepth}",
            f"--numjobs={settings.jobs}",
            f"--size={size_mib // settings.jobs}m",
            f"--ioengine={settings.ioengine}",
            f"--direct={int(settings.direct)}",
            "--end_fsync=1",
            "--group_reporting",
            "--output-format=json",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise HostEnvironmentError(
                f"fio failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
        job = json.loads(proc.stdout[proc.stdout.index("{") :])["jobs"][0]
        written = int(job["write"]["io_bytes"])
        seconds = float(job["job_runtime"]) / 1000  # ms, fsync at the end included
        return Throughput(written, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reframe(frame: bytes, collector_id: str) -> bytes:
    """The same batch under another collector id (a distinct identity), CRC recomputed."""
    header = bytearray(frame[:HEADER_SIZE])
    header[8 : 8 + COLLECTOR_ID_BYTES] = collector_id.encode().ljust(COLLECTOR_ID_BYTES, b"\0")
    seal_crc(header, frame[HEADER_SIZE:])
    return bytes(header) + frame[HEADER_SIZE:]


def sink_frames(size_mib: int, frame_kib: int) -> list[bytes]:
    pool = synthetic_frames(frame_kib * 1024, pool=64)
    total, out, cycle = size_mib * MIB, [], 0
    written = 0
    while written < total:
        for frame in pool:
            f = reframe(frame, f"bench-{cycle}")
            out.append(f)
            written += len(f)
            if written >= total:
                break
        cycle += 1
    return out


def run_sink(
    path: Path, frames: list[bytes], flush_every: int, direct_io: bool | None = None
) -> tuple[Throughput, str]:
    """The sink's write path on ``frames``; also says how it wrote (direct or buffered)."""
    work = scratch(path, "sink")
    try:
        store = SegmentStore(work, direct_io=direct_io)
        mode = store.write_mode
        started = time.perf_counter()
        for i, frame in enumerate(frames, 1):
            store.put(frame, "bench")
            if i % flush_every == 0:
                store.flush()
        store.flush()
        seconds = time.perf_counter() - started
        store.close()
        if store.counters.batches != len(frames):
            raise InputError(f"sink bench stored {store.counters.batches} of {len(frames)} frames")
        return Throughput(store.counters.bytes_written, seconds), mode
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ceiling_once(
    path: Path,
    frames: list[bytes],
    flush_every: int,
    direct_io: bool | None,
    ready: Barrier | None = None,
) -> tuple[float, float, int]:
    """One checking writer: (started, ended, bytes). ``perf_counter`` is the system's monotonic
    clock on Linux, so the times of writers in other processes compare."""
    work = scratch(path, "ceiling")
    try:
        writer = Writer() if direct_io is not False and direct_io_supported(work) else None
        target = work / "segment"
        appender: Appender = (
            BufferedAppender(target) if writer is None else DirectAppender(target, writer)
        )
        if ready is not None:
            ready.wait(60)
        started = time.perf_counter()
        for i, frame in enumerate(frames, 1):
            view = memoryview(frame)
            if frame_crc(view[:HEADER_SIZE], view[HEADER_SIZE:]) != stored_crc(frame):
                raise InputError(f"ceiling bench: frame {i} fails its CRC32C")
            appender.append(frame)
            if i % flush_every == 0:
                appender.sync()
        appender.sync()
        ended = time.perf_counter()
        size = appender.size
        appender.close()
        if writer is not None:
            writer.shutdown()
        if size != sum(len(f) for f in frames):
            raise InputError(f"ceiling bench wrote {size} bytes of {sum(len(f) for f in frames)}")
        return started, ended, size
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_ceiling(
    path: Path,
    frames: list[bytes],
    flush_every: int,
    direct_io: bool | None = None,
    workers: int = 1,
) -> Throughput:
    """The least a sink must do per byte, with the sink's own appender: check each frame's CRC32C,
    append it, sync every ``flush_every`` frames. No parsing, dedup, index or hour files: not a
    sink, the ceiling of one on this CPU and volume. Below the target, no sink that checks what it
    stores reaches the target there. ``workers`` > 1: that many such writers in processes of their
    own (as many sink instances on one node would be), each with its share of the frames and its
    own file, started together; the throughput is all their bytes over the time from the first
    start to the last end."""
    if workers == 1:
        started, ended, size = _ceiling_once(path, frames, flush_every, direct_io)
        return Throughput(size, ended - started)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(workers)
    results: multiprocessing.queues.Queue[tuple[str, Any]] = ctx.Queue()

    def child(share: list[bytes]) -> None:
        try:
            results.put(("ok", _ceiling_once(path, share, flush_every, direct_io, ready)))
        except BaseException as exc:  # reported to the parent, which raises it
            results.put(("error", f"{type(exc).__name__}: {exc}"))

    procs = [ctx.Process(target=child, args=(frames[i::workers],)) for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=900) for _ in procs]
    except queue.Empty:
        raise HostEnvironmentError(
            "ceiling bench: a writer process gave no result in 900 s"
        ) from None
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    errors = [detail for kind, detail in outcomes if kind == "error"]
    if errors:
        raise InputError(f"ceiling bench: {errors[0]}")
    spans = [detail for _kind, detail in outcomes]
    return Throughput(
        sum(size for _s, _e, size in spans),
        max(end for _s, end, _n in spans) - min(start for start, _e, _n in spans),
    )


def geometry(path: Path) -> dict[str, Any]:
    """The volume under ``path``: source, filesystem, md level/chunk/members, XFS stripe."""
    out: dict[str, Any] = {}
    proc = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.split():
        source, fstype, options = [*proc.stdout.split(), "", "", ""][:3]
        out.update({"source": source, "fstype": fstype, "options": options})
        md = Path("/sys/class/block") / Path(os.path.realpath(source)).name / "md"
        if md.is_dir():
            out["md"] = {
                "level": (md / "level").read_text().strip(),
                "chunk_kib": int((md / "chunk_size").read_text()) // 1024,
                "raid_disks": int((md / "raid_disks").read_text()),
            }
        if fstype == "xfs":
            info = subprocess.run(
                ["xfs_info", str(path)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            bsize = re.search(r"^data\s+=\s+bsize=(\d+)", info, re.MULTILINE)
            stripe = re.search(r"sunit=(\d+)\s+swidth=(\d+) blks", info)
            if bsize and stripe:
                block = int(bsize.group(1))
                out["xfs"] = {
                    "bsize": block,
                    "sunit_bytes": int(stripe.group(1)) * block,
                    "swidth_bytes": int(stripe.group(2)) * block,
                }
    return out


def settings_dict(settings: FioSettings) -> dict[str, Any]:
    return asdict(settings)
