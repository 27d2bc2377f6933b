"""Trace storage: append-only tar shards of FLAC + JSON, crash-safe, resumable, self-checking.

Layout of an output folder:

    DIR/manifest.json                   seed, splits, stages, runs (rewritten atomically)
    DIR/shards/shard-RRRR-SSSSS.tar     run RRRR, shard SSSSS; only ever appended to
    DIR/quarantine/                     corrupt shards moved aside on resume (with a .why.txt)
    DIR/.lock                           flock: one writer per folder

A trace with key K (the 8-digit index) is the tar members ``K.t0.user.flac``, ``K.t0.user_clean.flac``,
``K.t0.agent.flac``, ... and last ``K.json``: the record, whose ``files`` lists the sha256 of every
FLAC member. All members of a trace go out in one write followed by fsync; **a trace is committed
when its JSON member is complete and every checksum matches.** Anything after the last committed
trace of an unsealed shard is the tail of an interrupted write (``kill -9``, power loss): on resume
it is cut off (that trace is regenerated, it was never committed), and the shard is sealed with
tar's end-of-archive blocks, so every shard is a valid tar (``tar tf`` reads it).
A full 512-byte header with a bad checksum, a record whose checksums fail, or data after the
end-of-archive marker cannot come from an interrupted append: the shard is *corrupt*. Resume then
moves it to ``quarantine/`` with a message naming it and how many traces it held; those traces
are regenerated (everything is a deterministic function of (seed, index)), so nothing is lost
silently. Readers (stats, tokenize) read committed traces only and report corrupt shards.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.common.errors import ParleyError

log = logging.getLogger(__name__)

BLOCK = 512
EOA = b"\0" * (2 * BLOCK)  # tar end-of-archive marker
SHARDS, QUARANTINE, MANIFEST, LOCK = "shards", "quarantine", "manifest.json", ".lock"


# --- encoding ------------------------------------------------------------------------------------
def _member(name: str, data: bytes) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + data + b"\0" * (-len(data) % BLOCK)


def flac_bytes(x: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(x, np.float32), -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class EncodedTrace:
    index: int
    key: str
    data: bytes  # the tar members of the trace, ready to append
    record: dict


def encode_trace(record: dict, audio: dict[str, tuple[np.ndarray, int]]) -> EncodedTrace:
    key = record["key"]
    members, files = [], {}
    for name, (x, sr) in audio.items():
        fname = f"{key}.{name}.flac"
        data = flac_bytes(x, sr)
        files[fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        members.append(_member(fname, data))
    record = dict(record, files=files)
    members.append(_member(f"{key}.json", json.dumps(record, ensure_ascii=False).encode()))
    return EncodedTrace(int(record["index"]), key, b"".join(members), record)


# --- reading -------------------------------------------------------------------------------------
@dataclass
class ShardScan:
    path: Path
    traces: dict[int, dict] = field(default_factory=dict)  # index -> record (committed traces)
    duplicates: int = 0  # the same index committed twice inside this shard
    committed_end: int = 0  # byte offset just after the last committed trace
    size: int = 0
    sealed: bool = False
    error: str | None = None  # corrupt: why

    @property
    def tail_bytes(self) -> int:
        return 0 if self.sealed or self.error else self.size - self.committed_end


def walk_shard(path: Path, want_audio: bool = False) -> Iterator[tuple[str, object]]:
    """Parse a shard; yields ("trace", (record, {member: bytes})), ("sealed", None),
    ("end", committed_end) or ("error", message). Checksums are always verified."""
    size = path.stat().st_size
    committed = 0
    pending: dict[str, dict[str, bytes | str]] = {}
    with open(path, "rb") as f:
        off = 0
        while off < size:
            f.seek(off)
            hdr = f.read(BLOCK)
            if len(hdr) < BLOCK:
                break  # a partial header: interrupted append
            if hdr == b"\0" * BLOCK:
                rest = f.read()
                if len(rest) >= BLOCK and not any(rest):
                    if pending:
                        yield "error", f"unfinished trace {sorted(pending)[0]} before the end-of-archive marker"
                        return
                    yield "end", committed
                    yield "sealed", None
                    return
                if any(rest):
                    yield "error", f"data after an end-of-archive block at byte {off}"
                    return
                break  # a partial end marker: interrupted seal
            try:
                ti = tarfile.TarInfo.frombuf(hdr, "utf-8", "strict")
            except tarfile.HeaderError as e:
                yield "error", f"bad tar header at byte {off} ({e})"
                return
            start, end = off + BLOCK, off + BLOCK + ti.size + (-ti.size % BLOCK)
            if end > size:
                break  # member data cut short: interrupted append
            data = f.read(ti.size)
            key, _, rest_name = ti.name.partition(".")
            if rest_name == "json":
                try:
                    rec = json.loads(data)
                except ValueError:
                    yield "error", f"unreadable record {ti.name} at byte {off}"
                    return
                got = pending.pop(key, {})
                for fname, info in rec.get("files", {}).items():
                    h = got.get(fname + "#sha")
                    if h != info["sha256"]:
                        yield "error", f"trace {key}: {fname} {'missing' if h is None else 'checksum mismatch'}"
                        return
                committed = end
                audio = {n: b for n, b in got.items() if not n.endswith("#sha")} if want_audio else {}
                yield "trace", (rec, audio)
            else:
                p = pending.setdefault(key, {})
                p[ti.name + "#sha"] = hashlib.sha256(data).hexdigest()
                if want_audio:
                    p[ti.name] = data
            off = end
    yield "end", committed


def scan_shard(path: Path) -> ShardScan:
    s = ShardScan(path, size=path.stat().st_size)
    for kind, val in walk_shard(path):
        if kind == "trace":
            rec = val[0]  # type: ignore[index]
            if rec["index"] in s.traces:
                s.duplicates += 1
            else:
                s.traces[int(rec["index"])] = rec
        elif kind == "end":
            s.committed_end = int(val)  # type: ignore[arg-type]
        elif kind == "sealed":
            s.sealed = True
        elif kind == "error":
            s.error = str(val)
    return s


def shard_paths(root: Path) -> list[Path]:
    return sorted((root / SHARDS).glob("shard-*.tar"))


def iter_traces(root: Path, want_audio: bool = True, splits: set[str] | None = None,
                sealed_only: bool = False) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """Committed traces of every readable shard, each index once (first wins)."""
    seen: set[int] = set()
    for p in shard_paths(root):
        events = list(walk_shard(p, want_audio=False)) if sealed_only else None
        if sealed_only and not any(k == "sealed" for k, _ in events):  # type: ignore[union-attr]
            continue
        for kind, val in walk_shard(p, want_audio=want_audio):
            if kind == "error":
                log.warning("%s is corrupt (%s): skipped its remaining traces", p, val)
            if kind != "trace":
                continue
            rec, files = val  # type: ignore[misc]
            if rec["index"] in seen or (splits and rec["split"] not in splits):
                continue
            seen.add(rec["index"])
            yield rec, files


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(io.BytesIO(data), dtype="float32")
    return x, sr


# --- writing ------------------------------------------------------------------------------------
def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def prepare_out(out: Path) -> Path:
    """Create the output folder; a clear ParleyError when it cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParleyError(f"output {out} exists and is not a folder")
    try:
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
        probe = out / SHARDS / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ParleyError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    return out


class DirLock:
    """Exclusive flock on DIR/.lock (released by the kernel even after kill -9)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK
        self.fd: int | None = None

    def __enter__(self) -> "DirLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ParleyError(f"another `parley distill generate` is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass
class Inventory:
    done: dict[int, str] = field(default_factory=dict)  # index -> shard name
    quarantined: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    duplicates: int = 0


def recover(root: Path) -> Inventory:
    """Check every shard before a run: seal interrupted ones, quarantine corrupt ones (loudly)."""
    inv = Inventory()
    for p in shard_paths(root):
        s = scan_shard(p)
        if s.error:
            qdir = root / QUARANTINE
            qdir.mkdir(exist_ok=True)
            dst = qdir / f"{p.name}.{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(p, dst)
            msg = (f"shard {p.name} is corrupt ({s.error}); moved to {dst.relative_to(root)}. "
                   f"It held {len(s.traces)} readable trace(s) before the damage; "
                   f"every trace of it will be regenerated by this run")
            dst.with_name(dst.name + ".why.txt").write_text(msg + "\n")
            log.warning(msg)
            inv.quarantined.append(p.name)
            continue
        if not s.sealed:
            with open(p, "r+b") as f:
                f.truncate(s.committed_end)
                f.seek(s.committed_end)
                if s.traces:
                    f.write(EOA)
                f.flush()
                os.fsync(f.fileno())
            if not s.traces:
                p.unlink()
            if s.tail_bytes:
                log.info("%s: an interrupted run left %d uncommitted byte(s) after %d trace(s): cut off "
                         "(that trace is regenerated)", p.name, s.tail_bytes, len(s.traces))
            inv.repaired.append(p.name)
        for i in s.traces:
            if i in inv.done:
                inv.duplicates += 1
                log.warning("trace %d is in both %s and %s: readers use the first", i, inv.done[i], p.name)
            else:
                inv.done[i] = p.name
        inv.duplicates += s.duplicates
    return inv


class ShardWriter:
    """Appends encoded traces to shard-RRRR-SSSSS.tar files of one run (one writer per folder)."""

    def __init__(self, root: Path, run: int, max_traces: int = 100, max_bytes: int = 256 << 20) -> None:
        self.dir = root / SHARDS
        self.run, self.max_traces, self.max_bytes = run, max_traces, max_bytes
        self.seq, self.f, self.count, self.bytes = 0, None, 0, 0
        self.sealed: list[Path] = []

    def _open(self) -> None:
        while True:
            p = self.dir / f"shard-{self.run:04d}-{self.seq:05d}.tar"
            self.seq += 1
            try:
                self.f = open(p, "xb")
                break
            except FileExistsError:
                continue
        _fsync_dir(self.dir)
        self.path, self.count, self.bytes = p, 0, 0

    def write(self, t: EncodedTrace) -> None:
        if self.f is None:
            self._open()
        assert self.f is not None
        self.f.write(t.data)
        self.f.flush()
        os.fsync(self.f.fileno())  # committed from here on
        self.count += 1
        self.bytes += len(t.data)
        if self.count >= self.max_traces or self.bytes >= self.max_bytes:
            self.seal()

    def seal(self) -> None:
        if self.f is None:
            return
        self.f.write(EOA)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        self.f = None
        self.sealed.append(self.path)
        log.debug("sealed %s (%d traces)", self.path.name, self.count)

    def close(self) -> None:
        self.seal()
