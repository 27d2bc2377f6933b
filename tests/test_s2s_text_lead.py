"""`distill train --text-lead N`: each word's monologue token N frames before its speech, kept in
the exported layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.layout import StreamLayout, place_text, validate_layout

pytest.importorskip("model.llama")


def test_place_text_moves_words_earlier_by_the_lead() -> None:
    lay0, lay2 = StreamLayout(n_q=4, card=16, text_card=100), StreamLayout(n_q=4, card=16, text_card=100, text_lead=2)
    toks, frames = [7, 8, 9], [0, 0, 5]  # word 1 = two tokens at frame 0, word 2 at frame 5
    a = place_text(toks, frames, 10, 20, lay0)
    b = place_text(toks, frames, 10, 20, lay2)
    assert list(np.flatnonzero(a != lay0.text_pad)) == [10, 11, 15]
    assert list(np.flatnonzero(b != lay2.text_pad)) == [8, 9, 13] and list(b[[8, 9, 13]]) == toks
    c = place_text(toks, frames, 1, 20, lay2)  # clipped at frame 0, order kept
    assert list(np.flatnonzero(c != lay2.text_pad)) == [0, 1, 4]
    with pytest.raises(ValueError, match="negative text lead"):
        validate_layout(StreamLayout(n_q=4, card=16, text_card=100, delays=(0,) * 4, text_lead=-1))


def test_interrupted_reply_keeps_only_the_words_it_said() -> None:
    """A reply cut after L frames keeps the tokens of words that started before the cut."""
    from distill.curriculum import Grid, Turn

    lay = StreamLayout(n_q=2, card=16, text_card=100, delays=(0, 0), text_lead=2)
    turn = Turn(np.zeros((2, 4), np.int64), np.ones((2, 12), np.int64), [5, 6, 7], name="t", token_frames=[0, 4, 8])
    cv = Grid(30, np.zeros(2, np.int64), lay)
    cv.put_agent(turn, a0=10, length=7)  # said frames 10..16: words at 10 and 14, not the one at 18
    assert list(np.flatnonzero(cv.text != lay.text_pad)) == [8, 12]


def test_tiny_training_with_a_text_lead_exports_its_layout(tmp_path: Path) -> None:
    from distill.train import TrainConfig
    from distill.train_run import TrainJob, run_training
    from model.presets import tiny_speech_config
    from model.speech_ckpt import read_trained

    assert tiny_speech_config(text_lead=3).layout.text_lead == 3
    tc = TrainConfig(steps=4, batch_size=2, log_every=1, eval_every=100, ckpt_every=100, max_frames=48, bf16=False)
    job = TrainJob(train=tc, synthetic=8, tiny=True, text_lead=2, run_dir=tmp_path / "run", export=tmp_path / "w")
    assert run_training(job) == 0
    man = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert man["config"]["layout"]["text_lead"] == 2
    assert read_trained(tmp_path / "w")[0].layout.text_lead == 2
