"""`parley distill probe`: speech CE with the turn's own monologue, another turn's and none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.curriculum import CurriculumConfig, Stage, Turn
from distill.probe import CONDITIONS, _with_text, probe_table, text_reliance
from distill.train import TrainConfig, train

SIL = np.array([1, 2, 3, 4])


def _turns() -> list[Turn]:
    """Replies whose every frame says one of two words (10 or 40) with that word's own sound: the
    speech history never tells the next word, only the monologue does."""
    rng = np.random.default_rng(3)
    sound = {10: np.array([5, 6, 7, 8]), 40: np.array([12, 13, 14, 15])}  # (K,) codes of a word's frame
    turns = []
    for i in range(8):
        words = [int(w) for w in rng.choice([10, 40], 8)]
        agent = np.stack([sound[w] for w in words], axis=1)  # (K, 8)
        turns.append(Turn(user=np.zeros((4, 0), np.int64), agent=agent, reply_tokens=words, token_frames=list(range(8)),
                          name=f"r{i}", trace=f"t{i}"))
    return turns


def _model():
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model

    torch.manual_seed(0)
    return build_model(tiny_speech_config(4, n_q=4, card=16, text_card=64), pretrained=False)


def test_with_text_swaps_the_words_and_keeps_the_frames() -> None:
    ex = {"text_in": np.array([63, 5, 6, 7]), "text_tgt": np.array([5, 6, 7, 0]), "agent_in": np.ones((4, 4))}
    donor = {"text_tgt": np.array([9, 9])}
    other = _with_text(ex, donor, pad=0)
    assert other["text_tgt"].tolist() == [9, 9, 0, 0] and other["text_in"].tolist() == [63, 9, 9, 0]
    none = _with_text(ex, None, pad=0)
    assert none["text_tgt"].tolist() == [0, 0, 0, 0] and none["text_in"].tolist() == [63, 0, 0, 0]
    assert other["agent_in"] is ex["agent_in"]  # the speech is the turn's own


def test_a_model_that_learnt_the_words_pays_for_the_wrong_ones(tmp_path: Path) -> None:
    turns = _turns()
    untrained = {r.condition: r for r in text_reliance(_model(), turns, SIL)}
    model = _model()
    tc = TrainConfig(steps=150, batch_size=4, lr=1e-2, warmup=10, log_every=50, eval_every=10_000, ckpt_every=10_000,
                     max_frames=64, curriculum=CurriculumConfig(Stage.SPEAK, lead=(2, 2), tail=2))
    train(model, turns, [], SIL, tc, tmp_path)
    rows = {r.condition: r for r in text_reliance(model, turns, SIL)}

    assert list(rows) == list(CONDITIONS) and rows["own"].frames == 64
    assert rows["own"].speech_ce < untrained["own"].speech_ce - 1.0  # it learnt the replies
    assert rows["other"].speech_ce > rows["own"].speech_ce + 0.5  # and which one its words say
    assert abs(untrained["other"].speech_ce - untrained["own"].speech_ce) < 0.2  # (an untrained model: no gap)
    assert "| other |" in probe_table(list(rows.values()))
