"""`parley codec pack-opus`: FLAC shards -> Ogg Opus groups that fit one GPU-machine call, families
interleaved, idempotent, and readable by the trainer's ShardDataset."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from codec.data import ShardDataset
from codec.stage import pack_opus, unpack_opus


def test_pack_opus_groups_interleaves_and_reads_back(tmp_path) -> None:
    src, dst = tmp_path / "flac", tmp_path / "opus"
    src.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 20) / 16000
    for name in ("shard_000", "shard_001", "shard_002", "real_en_000", "real_en_001"):
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(src / f"{name}.flac", x.astype(np.float32), 16000, subtype="PCM_16")
    one = (src / "shard_000.flac").stat().st_size / 2**20  # Opus is far smaller: ~2 shards per group
    groups = pack_opus(src, dst, bitrate="24k", group_mb=0.13)
    names = [sorted(p.stem for p in g.glob("*.ogg")) for g in groups]
    assert sum(len(n) for n in names) == 5 and len(groups) >= 2, names
    assert names[0] == ["real_en_000", "shard_000"], names  # families alternate from the first group
    assert all(sum(f.stat().st_size for f in g.glob("*.ogg")) <= 0.13 * 2**20 for g in groups if
               len(list(g.glob("*.ogg"))) > 1)
    assert one > 0.13  # the FLAC would not have fit
    assert pack_opus(src, dst, group_mb=0.13) == groups  # idempotent: nothing re-encoded or moved
    train = tmp_path / "train"
    train.mkdir()
    for g in groups[1:]:  # as travelled; the first group is unpacked to FLAC as on the GPU host
        for f in g.glob("*.ogg"):
            f.rename(train / f.name)
    firsts = sorted(groups[0].glob("*.ogg"))
    assert unpack_opus(firsts, train, workers=2) == 2 and unpack_opus(firsts, train, workers=2) == 0
    assert sorted(p.name for p in train.glob("*.flac")) == ["real_en_000.flac", "shard_000.flac"]
    (train / ".partly_written.tmp.flac").write_bytes(b"fLaC\x00")  # in flight: skipped, no crash
    ds = ShardDataset(train, segment=16000, seed=0)
    assert len(ds.audio) == 5 and abs(ds.hours - 5 * 20 / 3600) < 0.01
    b = ds.batch(3)
    assert b.shape == (3, 16000) and np.abs(b).max() > 1000  # int16 speech-level audio, not silence
