"""Training while the data is still made: `train --follow` (distill.pool) and `tokenize --follow`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distill import store
from distill.curriculum import Stage
from distill.pool import TurnPool, is_val_trace, item_trace
from distill.runner import GenConfig, generate
from distill.s2s_data import layout_for
from distill.tokenize import tokenize
from distill.tokens import load_manifest

ROOT = Path(__file__).resolve().parent.parent
CFG = GenConfig(seed=5, stages="fake", eval_frac=0.1)


def fake_encode(text: str) -> list[int]:  # one token per character, ids < 64
    return [ord(c) % 64 for c in text]


def test_val_rule_is_per_trace_stable_and_near_the_fraction() -> None:
    keys = [f"{i:08d}" for i in range(20_000)]
    share = sum(is_val_trace(k, 0.05) for k in keys) / len(keys)
    assert 0.045 < share < 0.055
    assert [is_val_trace(k, 0.05) for k in keys[:50]] == [is_val_trace(k, 0.05) for k in keys[:50]]
    assert not any(is_val_trace(k, 0.0) for k in keys[:500]) and all(is_val_trace(k, 1.0) for k in keys[:500])


@pytest.mark.parametrize("stage", [Stage.SPEAK, Stage.CONVERSE])
def test_pool_grows_between_reloads_val_fixed_and_disjoint(stage: Stage, tmp_path: Path, tiny_codec: Path) -> None:
    d = tmp_path / "t"
    generate(d, 24, CFG, shard_traces=8, progress=False)
    tokenize(d, tiny_codec)
    layout = layout_for(d, text_card=64)
    pool = TurnPool([d / "tokens"], layout, stage, val_frac=0.3, encode=fake_encode)
    r0 = pool.refresh()
    assert r0.shards == 3 and r0.train == len(pool.train) > 0 and r0.val == len(pool.val) > 0
    train0, val0 = list(pool.train), list(pool.val)
    assert pool.refresh().shards == 0 and pool.train == train0  # nothing new: nothing changes
    generate(d, 48, CFG, shard_traces=8, progress=False)  # the folder grows: 3 more shards
    tokenize(d, tiny_codec)
    r1 = pool.refresh()
    assert r1.shards == 3 and r1.train > 0 and r1.val > 0
    assert pool.train[: len(train0)] == train0 and pool.val[: len(val0)] == val0  # old items stay where they were
    tr_keys, val_keys = {item_trace(t) for t in pool.train}, {item_trace(t) for t in pool.val}
    assert not tr_keys & val_keys  # never leaks: a trace is on one side only
    assert all(is_val_trace(k, 0.3) for k in val_keys) and not any(is_val_trace(k, 0.3) for k in tr_keys)
    plan_train = {f"{rec['index']:08d}" for rec, _ in store.iter_traces(d, want_audio=False) if rec["split"] == "train"}
    assert tr_keys | val_keys <= plan_train  # the plan's eval traces stay out of both
    if stage is Stage.CONVERSE:  # items are whole traces
        assert all(isinstance(it, list) and len({t.trace for t in it}) == 1 for it in pool.train)
    # a resumed trainer builds its pool from disk: the same split
    again = TurnPool([d / "tokens"], layout, stage, val_frac=0.3, encode=fake_encode)
    again.refresh()
    names = (lambda items: sorted(str([t.name for t in it] if isinstance(it, list) else it.name) for it in items))
    assert names(again.train) == names(pool.train) and names(again.val) == names(pool.val)
    assert pool.turns == again.turns and abs(pool.seconds - again.seconds) < 1e-6 and "codec" in pool.describe()


class _Seen(list):
    """A training list that records which of its items were drawn."""

    drawn: set[int]

    def __getitem__(self, i):  # noqa: ANN001, ANN204
        self.drawn.add(int(i))
        return super().__getitem__(i)


def test_train_refresh_hook_grows_the_pool_mid_run(tmp_path: Path) -> None:
    """`train(..., refresh=)`: items appended between steps are drawn from the next step on; the
    step count and optimizer go on (no restart)."""
    from distill.train import TrainConfig, train
    from distill.train_run import synthetic_turns
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model

    cfg = tiny_speech_config(4, text_card=64, n_q=4, card=16)
    model = build_model(cfg, pretrained=False)
    turns = synthetic_turns(40, cfg.layout)
    tr = _Seen(turns[:4])
    tr.drawn = set()
    val = turns[4:5]
    calls: list[int] = []

    def refresh() -> None:
        calls.append(len(tr))
        if len(calls) == 3:  # before step 3: the generator has sealed more
            tr.extend(turns[5:40])
            val.append(turns[4])

    tc = TrainConfig(steps=8, batch_size=8, warmup=1, log_every=1, eval_every=4, ckpt_every=100, max_frames=32)
    m = train(model, tr, val, np.zeros(4, np.int64), tc, tmp_path, refresh=refresh)
    assert m["step"] == 8 and len(calls) == 8 and calls[:3] == [4, 4, 4] and calls[3] == 39
    assert max(tr.drawn) >= 4  # new items were trained on
    assert "val_loss" in m


def _entries_ok(tdir: Path) -> int:
    """Every shard the manifest names is a complete .npz (what a trainer reading it sees)."""
    man = load_manifest(tdir)
    for e in man["shards"].values():
        with np.load(tdir / e["file"]) as z:
            assert len(json.loads(z["meta"].tobytes())) == e["turns"]
    return len(man["shards"])


@pytest.mark.timeout(240)
def test_tokenize_follow_on_a_growing_store(tmp_path: Path, tiny_codec: Path) -> None:
    d, until = tmp_path / "t", tmp_path / "generate.done"
    cmd = [sys.executable, "-m", "voice", "distill", "tokenize", str(d), "--codec", str(tiny_codec), "--follow",
           "--until", str(until), "--poll-s", "0.2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        generate(d, 4, CFG, shard_traces=4, progress=False)  # the folder appears after the loop started

        def wait_for(n: int) -> None:
            t0 = time.time()
            while time.time() - t0 < 120:
                assert proc.poll() is None, proc.communicate()
                if (d / "tokens" / "manifest.json").exists() and _entries_ok(d / "tokens") >= n:
                    return
                time.sleep(0.2)
            raise AssertionError(f"not {n} shards tokenized in time")

        wait_for(1)
        generate(d, 10, CFG, shard_traces=4, progress=False)  # two more shards, sealed
        wait_for(3)
        # a shard still being written (no end-of-archive marker) is left alone until it is sealed
        sealed = store.shard_paths(d)[0].read_bytes()
        open_shard = d / store.SHARDS / "shard-0009-00000.tar"
        open_shard.write_bytes(sealed[: -len(store.EOA)])
        time.sleep(1.0)
        assert open_shard.name not in load_manifest(d / "tokens")["shards"] and proc.poll() is None
        with open(open_shard, "ab") as f:
            f.write(store.EOA)
        until.touch()  # the generator has ended: one last pass, then exit
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["passes"] >= 3 and summary["shards_total"] == 4 and _entries_ok(d / "tokens") == 4
    assert "tokens: +" in err


def test_follow_resume_reloads_the_pool_from_disk(tmp_path: Path, tiny_codec: Path, caplog) -> None:  # noqa: ANN001
    """run_training(follow=True) on a folder, then again after it grew: resumes from last.pt, the pool
    is rebuilt from disk (bigger), the export counts it."""
    import logging

    from distill.curriculum import CurriculumConfig
    from distill.train import TrainConfig
    from distill.train_run import TrainJob, run_training

    d = tmp_path / "t"
    generate(d, 16, CFG, shard_traces=8, progress=False)
    tokenize(d, tiny_codec)

    def job(steps: int) -> TrainJob:
        tc = TrainConfig(steps=steps, batch_size=2, log_every=1, eval_every=100, ckpt_every=100, max_frames=48,
                         curriculum=CurriculumConfig(Stage.SPEAK))
        return TrainJob(train=tc, data=(d / "tokens",), tiny=True, run_dir=tmp_path / "run", export=tmp_path / "w",
                        follow=True, reload_every_s=0.0, val_frac=0.2)

    with caplog.at_level(logging.INFO):
        assert run_training(job(2)) == 0
    first = json.loads((tmp_path / "w" / "manifest.json").read_text())
    generate(d, 32, CFG, shard_traces=8, progress=False)
    tokenize(d, tiny_codec)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_training(job(4)) == 0
    assert "resumed from" in caplog.text and "reload: +4 shard(s)" in caplog.text
    man = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert man["steps"] == 4 and man["train_turns"] > first["train_turns"] and man["train_config"]["follow"] is True
    assert "4 shard(s)" in man["training_data"]
    from codec.io import codec_id

    assert man["codec_id"] == codec_id(tiny_codec)  # the export names the codec whose tokens it learnt
