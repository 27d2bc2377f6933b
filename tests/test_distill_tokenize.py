"""`parley distill tokenize` with a tiny random codec checkpoint (the codec API, not its quality)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from distill import store
from distill.runner import GenConfig, generate
from distill.tokens import iter_token_turns, load_manifest

ROOT = Path(__file__).resolve().parent.parent


def test_tokenize_traces(tmp_path: Path, tiny_codec: Path) -> None:
    d = tmp_path / "t"
    generate(d, 6, GenConfig(seed=3, stages="fake"), shard_traces=4, progress=False)
    r = subprocess.run([sys.executable, "-m", "voice", "distill", "tokenize", str(d), "--codec", str(tiny_codec)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    man = load_manifest(d)
    assert man["n_q"] == 4 and man["bins"] == 32 and len(man["silence"]) == 4 and man["frame_rate"] == 12.5
    from codec import load_codec
    from codec.io import silence_codes

    assert man["silence"] == silence_codes(load_codec(tiny_codec)).tolist()  # what a served session is fed
    recs = {rec["index"]: rec for rec, _ in store.iter_traces(d, want_audio=False)}
    turns = list(iter_token_turns(d))
    assert len(turns) == sum(len(r["turns"]) for r in recs.values())
    for t in turns:
        rt = recs[t.meta["index"]]["turns"][t.meta["turn"]]
        assert t.meta["reply_text"] == rt["reply_text"] and t.meta["split"] == recs[t.meta["index"]]["split"]
        assert t.user.shape == (4, math.ceil(rt["user_dur_s"] * 12.5 - 1e-6))
        assert t.agent.shape[1] == (math.ceil(rt["agent_dur_s"] * 12.5 - 1e-6) if rt["agent_audio"] else 0)
        assert t.user.min() >= 0 and t.user.max() < 32
    # resume: nothing to redo; an open shard is skipped unless asked
    from distill.tokenize import tokenize

    again = tokenize(d, tiny_codec)
    assert again["shards_tokenized"] == 0
    generate(d, 8, GenConfig(seed=3, stages="fake"), shard_traces=4, progress=False)
    assert tokenize(d, tiny_codec)["shards_tokenized"] == 1  # the new sealed shard
    assert len(list(iter_token_turns(d, splits={"train", "eval", "eval_real"}))) == sum(
        len(rec["turns"]) for rec, _ in store.iter_traces(d, want_audio=False))


def test_eval_scores_the_teachers_own_codes(tmp_path: Path, tiny_codec: Path) -> None:
    """`parley distill eval --teacher`: the data's own agent codes and reply tokens, decoded and
    heard by Whisper: the row a perfect model gets (here through a tiny random codec: the
    plumbing; the real row is in distill/RUNS.md). It needs no speech-model weights."""
    import json

    d = tmp_path / "t"
    generate(d, 4, GenConfig(seed=5, stages="fake"), shard_traces=4, progress=False)
    from distill.tokenize import tokenize

    tokenize(d, tiny_codec)
    out = tmp_path / "teacher.json"
    r = subprocess.run([sys.executable, "-m", "voice", "distill", "eval", "--data", str(d), "--teacher", "--split", "train",
                        "--limit", "3", "--codec", str(tiny_codec), "--weights", str(tmp_path / "none"), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| all | 3 |" in r.stdout, r.stdout
    rows = json.loads(out.read_text())["rows"]
    spoken = [t for t in iter_token_turns(d, splits={"train"}) if t.user.shape[1]][:3]
    assert [row["name"] for row in rows] == [f"{t.meta['key']}.{t.meta['turn']}" for t in spoken]
    from distill.eval import normalize

    assert all(row["monologue"].strip() for row in rows), rows
    for row, t in zip(rows, spoken):  # the monologue is the reply itself, word for word
        assert normalize(row["monologue"]) == normalize(" ".join(w for w, *_ in t.meta["word_frames"] or [])), row
    r = subprocess.run([sys.executable, "-m", "voice", "distill", "eval", "--data", str(d), "--teacher",
                        "--from-codes", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "without --from-codes" in r.stderr, r.stderr


def test_an_unreadable_clip_leaves_its_trace_out(tmp_path: Path, tiny_codec: Path, monkeypatch) -> None:
    """Run 3 (2026-12-02): one clip libsndfile could not open ("Format not recognised") stopped
    tokenize for the rest of the run. A zero-sample clip is stored as 0 bytes, which reads that way."""
    from distill.tokenize import tokenize

    d = tmp_path / "t"
    generate(d, 4, GenConfig(seed=3, stages="fake"), shard_traces=4, progress=False)
    recs = {rec["key"]: rec for rec, _ in store.iter_traces(d, want_audio=False)}
    bad = sorted(recs)[1]
    assert store.flac_bytes(np.zeros(0, np.float32), 24000) == b""  # what the store held for that clip
    bad_clips = {v for rec, files in store.iter_traces(d, want_audio=True) if rec["key"] == bad
                 for n, v in files.items() if n.endswith(".flac")}
    real = store.decode_flac
    monkeypatch.setattr(store, "decode_flac", lambda data: real(b"" if data in bad_clips else data))
    assert tokenize(d, tiny_codec)["shards_tokenized"] == 1
    got = {t.meta["key"] for t in iter_token_turns(d, splits={"train", "eval", "eval_real"})}
    assert got == set(recs) - {bad}
