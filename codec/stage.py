"""Pack training shards as Ogg Opus for a GPU machine (`parley codec pack-opus`), unpack them there.

A device call carries at most ~60 MiB, so 16 kHz FLAC shards (~5 MB per 6 min) travel as Ogg Opus
(24 kbps: ~1 MB per 6 min), split into numbered groups that each fit one call. Groups interleave the
shard families (file-name prefixes: synthetic, game speech, other real speech) so that the first
group alone is a diverse training set; `ShardDataset` reads `.ogg` and re-scans its folder, so
later groups can be fed to a job that is already running. There, `parley codec unpack-opus` decodes
them to FLAC on all cores first: Opus decodes ~10x slower than FLAC, and the trainer's re-scan is
single-threaded (GPU run 2: ~30 s of stalled training per 50 Opus shards).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import subprocess
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from model.common.errors import ParleyError

log = logging.getLogger(__name__)


def _interleave(paths: list[Path]) -> list[Path]:
    """Round-robin over families (name without its trailing number), each in name order."""
    fam: dict[str, list[Path]] = {}
    for p in sorted(paths):
        fam.setdefault(re.sub(r"_?\d+$", "", p.stem), []).append(p)
    return [p for row in itertools.zip_longest(*fam.values()) for p in row if p is not None]


def _encode(src: Path, dst: Path, bitrate: str) -> None:
    tmp = dst.with_name("." + dst.name + ".tmp.ogg")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-c:a", "libopus",
           "-b:a", bitrate, "-application", "audio", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise ParleyError(f"ffmpeg failed on {src}: {r.stderr.strip()[-300:]}")
    tmp.replace(dst)


def pack_opus(src_dir: str | Path, dst_dir: str | Path, bitrate: str = "24k", group_mb: float = 55.0,
              workers: int = 2) -> list[Path]:
    """Encode every FLAC shard of src_dir to dst_dir/gNN/NAME.ogg; returns the group folders.

    Idempotent: shards already encoded (in any group) are kept where they are.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    shards = _interleave(list(src.glob("*.flac")))
    if not shards:
        raise ParleyError(f"no .flac shards in {src} (run `parley codec prepare-data` first)")
    dst.mkdir(parents=True, exist_ok=True)
    done = {p.stem for p in dst.glob("g*/*.ogg") if not p.name.startswith(".")}
    todo = [s for s in shards if s.stem not in done]
    log.info("%d shards, %d already packed, %d to encode", len(shards), len(done), len(todo))
    # encode into a flat temp folder first, then assign groups by size in interleaved order
    flat = dst / ".encoded"
    flat.mkdir(exist_ok=True)
    with ThreadPoolExecutor(workers) as ex:
        futs = [ex.submit(_encode, s, flat / f"{s.stem}.ogg", bitrate) for s in todo
                if not (flat / f"{s.stem}.ogg").exists()]
        for i, f in enumerate(futs):
            f.result()
            if (i + 1) % 20 == 0:
                log.info("encoded %d / %d", i + 1, len(futs))
    groups = sorted(p for p in dst.glob("g[0-9]*") if p.is_dir())
    size = {g: sum(f.stat().st_size for f in g.glob("*.ogg")) for g in groups}
    cur = groups[-1] if groups else None
    limit = group_mb * 2**20
    for s in todo:
        f = flat / f"{s.stem}.ogg"
        if cur is None or size[cur] + f.stat().st_size > limit:
            cur = dst / f"g{len(size):02d}"
            cur.mkdir()
            size[cur] = 0
        size[cur] += f.stat().st_size
        f.replace(cur / f.name)
    flat.rmdir()
    return sorted(size)


def _unpack_one(src: Path, train: Path) -> int:
    import soundfile as sf

    stem = src.name[: -len(src.suffix)]
    dst = train / f"{stem}.flac"
    if dst.exists() or (train / src.name).exists():
        return 0
    x, sr = sf.read(src, dtype="int16")
    tmp = train / f".{stem}.tmp.flac"  # dot-files are skipped by ShardDataset.refresh()
    sf.write(tmp, x, sr, subtype="PCM_16")
    tmp.replace(dst)
    return 1


def unpack_opus(srcs: list[Path], train_dir: str | Path, workers: int = 0) -> int:
    """Decode Ogg Opus shards to FLAC into train_dir (atomically, shards already there skipped);
    returns how many were written. workers 0: all cores."""
    train = Path(train_dir)
    train.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        return sum(ex.map(_unpack_one, srcs, [train] * len(srcs)))
