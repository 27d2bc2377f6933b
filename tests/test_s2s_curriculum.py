"""Curriculum stages (issue 11): tiny CPU layouts of Speak / Listen / Converse and a tiny training
run per stage that lowers the loss."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.curriculum import CurriculumConfig, Stage, Turn, stage_example, stage_items
from distill.train import LossConfig, TrainConfig, train
from model.layout import StreamLayout

L = StreamLayout(n_q=4, card=16, text_card=64, delays=(0, 1, 1, 1), user_text_delay=2)
SIL = np.array([1, 2, 3, 4])
FIXED = dict(lead=(2, 2), gap=(3, 3), tail=2)  # no randomness in the positions


def _turn(tu: int, ta: int, seed: int = 0, **kw) -> Turn:
    rng = np.random.default_rng(seed)
    return Turn(user=rng.integers(5, 16, (4, tu)), agent=rng.integers(5, 16, (4, ta)), reply_tokens=[10, 11, 12],
                token_frames=[0, 0, 4], user_tokens=[20, 21], user_token_frames=[0, 3], **kw)


def _ex(item, stage: Stage, **kw) -> dict[str, np.ndarray]:
    return stage_example(item, SIL, L, CurriculumConfig(stage, **{**FIXED, **kw}), random.Random(0), 200)


def test_speak_layout_user_silent_text_on_agent_speech() -> None:
    t = _turn(7, 9)
    ex = _ex(t, Stage.SPEAK)
    T = 2 + 9 + 2
    assert ex["text_tgt"].shape == (T,) and ex["user_in"].shape == (4, T) and "user_text_tgt" not in ex
    assert (ex["user_in"] == SIL[:, None]).all()  # the user stream is silent
    assert (ex["agent_tgt"][0, 2:11] == t.agent[0]).all() and ex["agent_speaking"][2:11].all()
    assert ex["agent_speaking"].sum() == 9
    text = ex["text_tgt"]
    assert text[2] == 10 and text[3] == 11 and text[6] == 12  # word-timed: frames 0, 0 (pushed), 4
    assert (np.delete(text, [2, 3, 6]) == L.text_pad).all()


def test_listen_layout_aux_user_text_after_the_heard_words() -> None:
    t = _turn(8, 9)
    ex = _ex(t, Stage.LISTEN)
    T = 2 + 8 + L.user_text_delay + 2
    assert ex["user_text_tgt"].shape == (T,) and ex["user_in"].shape == (4, T)
    assert (ex["user_in"][:, 2:10] == t.user).all() and (ex["user_in"][:, 10:] == SIL[:, None]).all()
    assert not ex["agent_speaking"].any() and (ex["text_tgt"] == L.text_pad).all()
    assert (ex["agent_tgt"][0] == SIL[0]).all()
    ut = ex["user_text_tgt"]
    assert ut[2 + 0 + 2] == 20 and ut[2 + 3 + 2] == 21  # word start + user_text_delay, never before
    assert (ut != L.text_pad).sum() == 2
    spread = _ex(Turn(t.user, t.agent, [], user_tokens=[20, 21, 22]), Stage.LISTEN)["user_text_tgt"]
    pos = np.nonzero(spread != L.text_pad)[0]
    assert list(spread[pos]) == [20, 21, 22] and pos[0] == 2 + 2 and pos[-1] < 2 + 8 + 2  # no timings: spread


def test_converse_layout_reply_after_user_interruption_backchannel_silence() -> None:
    a = _turn(5, 10, 1, trace="k", interrupted_at=4)
    b = _turn(4, 6, 2, trace="k", overlap_prev_at=4)  # cuts in 4 frames into a's reply
    ex = _ex([a, b], Stage.CONVERSE)
    a0 = 2 + 5 + 3  # reply right after the user's speech ends (+ gap)
    assert ex["agent_speaking"][a0] and not ex["agent_speaking"][:a0].any()
    u1 = a0 + 4
    assert (ex["user_in"][:, u1 : u1 + 4] == b.user).all()
    stop = a0 + 4 + 2  # the agent stops stop_frames after the cut
    assert ex["agent_speaking"][a0:stop].all() and not ex["agent_speaking"][stop : u1 + 4 + 3].any()
    assert (ex["text_tgt"][stop : u1 + 4 + 3] == L.text_pad).all()  # unsaid words are not in the monologue
    b0 = u1 + 4 + 3
    assert (ex["agent_tgt"][0, b0 : b0 + 6] == b.agent[0]).all()
    assert ex["user_text_tgt"][2 + 2] == 20 and ex["user_text_tgt"][u1 + 2] == 20
    # backchannel: the agent keeps talking through the user's mm-hmm
    c = _turn(5, 10, 3, trace="c")
    d = Turn(np.full((4, 2), 9), np.zeros((4, 0), int), [], user_tokens=[30], trace="c", overlap_prev_at=3, case="backchannel")
    ex = _ex([c, d], Stage.CONVERSE)
    assert ex["agent_speaking"].sum() == 10 and (ex["user_in"][:, 10 + 3 : 10 + 5] == 9).all()
    # silence turn: nothing on either side
    s = Turn(np.array(SIL)[:, None].repeat(6, 1), np.zeros((4, 0), int), [], case="silence")
    ex = _ex(s, Stage.CONVERSE)
    assert not ex["agent_speaking"].any() and (ex["text_tgt"] == L.text_pad).all()
    assert (ex["user_text_tgt"] == L.text_pad).all()


def test_stage_items() -> None:
    turns = [_turn(5, 6, 0, trace="a"), _turn(5, 0, 1, trace="a"), _turn(5, 6, 2, trace="b")]
    assert len(stage_items(turns, Stage.SPEAK)) == 2 and len(stage_items(turns, Stage.LISTEN)) == 3
    assert [len(x) for x in stage_items(turns, Stage.CONVERSE)] == [2, 1]


def _rule_turns(n: int, seed: int = 0) -> list[Turn]:
    """Turns with learnable rules: agent codes follow the text, user text follows the user codes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [int(w) for w in rng.integers(0, 8, 4)]
        agent = np.repeat(np.array(words)[None, :] + 2, 3, axis=1).repeat(4, 0)  # each word 3 frames
        user = np.repeat(np.array(words)[None, :] + 8, 2, axis=1).repeat(4, 0)
        out.append(Turn(user, agent, words, token_frames=[0, 3, 6, 9], user_tokens=words,
                        user_token_frames=[0, 2, 4, 6], trace=f"t{i // 2}", name=f"r{i}"))
    return out


@pytest.mark.parametrize("stage", list(Stage))
def test_tiny_training_run_per_stage_lowers_the_loss(stage: Stage, tmp_path: Path) -> None:
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model

    torch.manual_seed(0)
    cfg = tiny_speech_config(4, text_card=64, n_q=4, card=16, user_text_head=True)
    model = build_model(cfg, pretrained=False)
    items = stage_items(_rule_turns(24), stage)
    tc = TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=4, log_every=1, eval_every=1000, ckpt_every=1000,
                     max_frames=64, curriculum=CurriculumConfig(stage), loss=LossConfig(user_text_weight=1.0))
    train(model, items, [], SIL, tc, tmp_path)
    hist = [__import__("json").loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    first, last = np.mean([h["loss"] for h in hist[:3]]), np.mean([h["loss"] for h in hist[-3:]])
    assert last < 0.8 * first, (first, last)
    if stage is not Stage.SPEAK:
        assert "user_text" in hist[-1] and hist[-1]["user_text"] < hist[0]["user_text"]


def test_next_stage_starts_from_the_previous_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from distill.train_run import TrainJob, run_training
    from model.speech_ckpt import read_trained

    def job(stage: Stage, name: str, init: Path | None = None) -> TrainJob:
        tc = TrainConfig(steps=3, batch_size=2, log_every=1, eval_every=100, ckpt_every=100,
                         curriculum=CurriculumConfig(stage))
        return TrainJob(train=tc, synthetic=12, tiny=True, run_dir=tmp_path / name, export=tmp_path / f"{name}-w",
                        init=init)

    assert run_training(job(Stage.SPEAK, "speak")) == 0
    cfg, sd, _ = read_trained(tmp_path / "speak-w")
    assert not cfg.user_text_head and not any(k.startswith("user_text_proj") for k in sd)
    with caplog.at_level(logging.INFO, logger="distill.train_run"):
        assert run_training(job(Stage.LISTEN, "listen", tmp_path / "speak-w")) == 0
    assert "fresh: ['user_text_proj.weight']" in caplog.text
    cfg2, sd2, man = read_trained(tmp_path / "listen-w")
    assert cfg2.user_text_head and "user_text_proj.weight" in sd2
    assert man["train_config"]["stage"] == "listen" and man["train_config"]["init"].endswith("speak-w")


def test_periodic_export_mid_run_then_the_final_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`export_every_s`: trained parts are exported at checkpoints during the run (a lost GPU machine
    keeps them), each written beside the export and swapped in; the end overwrites with the final."""
    import model.speech_ckpt as ckpt
    from distill.train_run import TrainJob, run_training
    from model.speech_ckpt import read_trained

    seen: list[tuple[int, bool, bool]] = []  # (steps, partial, a complete export was already there)
    real = ckpt.save_trained_atomic

    def spy(model, out_dir, manifest=None):  # noqa: ANN001, ANN202
        seen.append((manifest["steps"], manifest["partial"], (Path(out_dir) / "manifest.json").exists()))
        real(model, out_dir, manifest)

    monkeypatch.setattr(ckpt, "save_trained_atomic", spy)
    tc = TrainConfig(steps=6, batch_size=2, log_every=1, eval_every=100, ckpt_every=2,
                     curriculum=CurriculumConfig(Stage.SPEAK))
    job = TrainJob(train=tc, synthetic=12, tiny=True, run_dir=tmp_path / "run", export=tmp_path / "w",
                   export_every_s=1e-6)
    assert run_training(job) == 0
    assert seen == [(2, True, False), (4, True, True), (6, False, True)]
    _, _, man = read_trained(tmp_path / "w")
    assert man["partial"] is False and man["steps"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "w"]  # no .tmp / .old left behind


def test_full_finetune_trains_the_backbone_at_its_scaled_lr(tmp_path: Path) -> None:
    """`--full-finetune`: no adapters, every backbone weight trains (its group at lr x backbone_lr_scale),
    the loss falls, and the export holds the backbone and loads back into a model of the same config."""
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model, read_trained, save_trained_atomic

    torch.manual_seed(0)
    with pytest.raises(ValueError, match="lora_rank=0"):
        build_model(tiny_speech_config(4, train_backbone=True), pretrained=False)
    cfg = tiny_speech_config(0, text_card=64, n_q=4, card=16, train_backbone=True)
    model = build_model(cfg, pretrained=False)
    assert not any("lora" in n for n, _ in model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    tc = TrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=4, log_every=1, eval_every=1000, ckpt_every=1000,
                     max_frames=64, backbone_lr_scale=0.5, curriculum=CurriculumConfig(Stage.SPEAK))
    train(model, stage_items(_rule_turns(24), Stage.SPEAK), [], SIL, tc, tmp_path / "run")
    hist = [__import__("json").loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert np.mean([h["loss"] for h in hist[-3:]]) < 0.8 * np.mean([h["loss"] for h in hist[:3]])
    moved = [n for n, p in model.backbone.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(before)  # every backbone weight trained
    sd = model.trainable_state_dict()
    assert all(f"backbone.{n}" in sd for n in before)
    save_trained_atomic(model, tmp_path / "w", {"steps": 40})
    cfg2, sd2, _ = read_trained(tmp_path / "w")
    assert cfg2.train_backbone and cfg2.lora_rank == 0
    back = build_model(cfg2, pretrained=False)
    back.load_trainable(sd2)
    for k, v in sd.items():  # int8 storage: within 1/254 of each row's absmax
        tol = v.abs().amax(-1, keepdim=True) / 250 if v.ndim >= 2 else 1e-6
        assert ((back.state_dict()[k] - v).abs() <= tol).all(), k


def test_backbone_lr_scale_sets_the_pretrained_group(tmp_path: Path) -> None:
    """The optimizer's backbone group runs at lr x backbone_lr_scale; new parts and LoRA at lr."""
    from model.presets import tiny_speech_config
    from model.speech_ckpt import build_model

    seen: dict[str, float] = {}
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        for g in self.param_groups:
            seen[f"{g['lr_scale']}"] = g["lr"]
        return real_step(self, *a, **k)

    torch.optim.AdamW.step = spy
    try:
        model = build_model(tiny_speech_config(0, text_card=64, n_q=4, card=16, train_backbone=True), pretrained=False)
        tc = TrainConfig(steps=1, batch_size=2, lr=1e-3, warmup=1, log_every=1, eval_every=100, ckpt_every=100,
                         max_frames=32, backbone_lr_scale=0.25, curriculum=CurriculumConfig(Stage.SPEAK))
        train(model, stage_items(_rule_turns(4), Stage.SPEAK), [], SIL, tc, tmp_path)
    finally:
        torch.optim.AdamW.step = real_step
    assert seen["1.0"] == pytest.approx(1e-3) and seen["0.25"] == pytest.approx(2.5e-4)
