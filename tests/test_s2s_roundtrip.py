"""Training layout == inference layout (issue 11): a tiny model that has memorized one Converse
example, run greedily through the streaming `SpeechGenerator` on that example's user stream,
writes back the example's own monologue and agent codes, frame for frame.

An off-by-one between `build_inputs` (teacher forcing: delays, text shift, BOS / INIT) and the
generator's step (what it feeds back, where it reads the text and the codebooks) would leave the
trained model's free-running output at chance however long it trained; this is the check that
no GPU run is spent on such a mismatch."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.curriculum import CurriculumConfig, Stage, Turn, stage_example
from distill.train import TrainConfig, train

SIL = np.array([1, 2, 3, 4])
CC = dict(lead=(2, 2), gap=(3, 3), tail=3)  # fixed positions: one example, always the same


def _trace() -> list[Turn]:
    rng = np.random.default_rng(7)
    user = rng.integers(5, 16, (4, 6))
    agent = rng.integers(5, 16, (4, 10))
    return [Turn(user=user, agent=agent, reply_tokens=[10, 11, 12, 13], token_frames=[0, 2, 5, 8],
                 user_tokens=[20, 21], user_token_frames=[0, 3], name="r0", trace="t0")]


@pytest.mark.parametrize("audio_head,text_lead,cpu_step", [
    ("depth", 0, "exact"), ("depth", 2, "exact"), ("delay", 0, "exact"), ("depth", 0, "fast")])
def test_a_memorized_example_comes_back_from_the_generator(audio_head: str, text_lead: int, cpu_step: str,
                                                           tmp_path: Path) -> None:
    from model.generator import SpeechGenerator
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model
    from model.speech_sampling import SpeechSamplingParams

    torch.manual_seed(0)
    cfg = tiny_speech_config(4, audio_head=audio_head, n_q=4, card=16, text_card=64, text_lead=text_lead)
    model = build_model(cfg, pretrained=False)
    items = [_trace()]
    cc = CurriculumConfig(Stage.CONVERSE, user_text=False, **CC)
    tc = TrainConfig(steps=300, batch_size=4, lr=1e-2, warmup=10, log_every=50, eval_every=10_000,
                     ckpt_every=10_000, max_frames=64, curriculum=cc)
    train(model, items, [], SIL, tc, tmp_path)

    ex = stage_example(items[0], SIL, cfg.layout, cc, random.Random(0), 64)
    T = ex["user_in"].shape[1]
    gen = SpeechGenerator(model, max_batch=2, max_frames=T + 1, sampling=SpeechSamplingParams(0.0, 0, 0.0, 0),
                          device="cpu", dtype=torch.float32, cpu_step=cpu_step)
    other, slot = gen.join(), gen.join()  # a second session beside it: rows must not mix
    text, audio = np.zeros(T, np.int64), np.zeros((4, T), np.int64)
    for t in range(T):
        out = gen.step({slot: ex["user_in"][:, t], other: SIL})
        text[t], audio[:, t] = out[slot].text, out[slot].audio
    assert (ex["text_tgt"] != cfg.layout.text_pad).sum() == 4  # the four words are in the example
    assert list(text) == list(ex["text_tgt"]), (text, ex["text_tgt"])
    mask = ex["agent_mask"]
    assert (audio[mask] == ex["agent_tgt"][mask]).all(), (audio, ex["agent_tgt"])
