"""Prompt set, held-out split and trace plans (pure functions of (seed, index))."""

from __future__ import annotations

from collections import Counter

import numpy as np

from distill.pipeline import clean_reply, heard_part
from distill.plan import REAL_VOICE, make_plan
from distill.prompts import PromptBank, is_held_out
from distill.voices import EVAL_TTS, EVAL_VOICES, UserVoice, train_voices, word_timings


def test_prompt_bank_size_and_disjoint_splits() -> None:
    b = PromptBank()
    c = b.counts()
    assert c["items_train"] > 5000 and c["templates_eval"] >= 10 and c["dialogues_eval"] >= 1
    train_t = {t for ts in b.templates["train"].values() for t in ts}
    eval_t = {t for ts in b.templates["eval"].values() for t in ts}
    assert train_t and eval_t and not train_t & eval_t
    rng = np.random.default_rng(0)
    texts = {b.prompt(rng, "train").text for _ in range(500)}
    assert len(texts) > 350  # diverse, not a handful of lines
    assert all("{" not in t and "}" not in t for t in texts)


def test_plans_are_deterministic_and_respect_the_split() -> None:
    assert make_plan(5, 123) == make_plan(5, 123)
    assert make_plan(5, 123) != make_plan(6, 123)
    plans = [make_plan(1, i) for i in range(1500)]
    splits = Counter(p.split for p in plans)
    cases = Counter(p.case for p in plans)
    assert splits["train"] > 1300 and splits["eval"] > 20
    assert set(cases) == {"single", "dialogue", "interruption", "backchannel", "silence"}
    train_tts = set(train_voices())
    for p in plans:
        if p.split == "eval_real":
            assert p.voice == REAL_VOICE and p.turns[0].recording
            continue
        v = UserVoice.parse(p.voice)
        if p.split == "eval":
            assert p.voice in EVAL_VOICES
            for t in p.turns:
                if t.kind in ("question", "request", "chitchat", "numbers", "names"):
                    assert is_held_out(t.template)
        else:
            assert v.tts in train_tts and v.tts not in EVAL_TTS and p.voice not in EVAL_VOICES
            if v.tts == "piper:joe":
                assert abs(v.semitones) != 3
            for t in p.turns:
                if t.kind in ("question", "request", "chitchat", "numbers", "names", "dialogue"):
                    assert not is_held_out(t.template)
        if p.case == "interruption":
            assert p.turns[0].cut_reply_at is not None and p.turns[1].overlap_prev_at == p.turns[0].cut_reply_at


def test_reply_cleanup_heard_part_and_word_timings() -> None:
    assert clean_reply("**Sure!** Here you go:\n1. one\n2. two 😀") == "Sure! Here you go: one two"
    r = clean_reply("One. Two. Three. Four.")
    assert r == "One. Two."
    assert "*" not in clean_reply("**bold** text") and "😀" not in clean_reply("hi 😀")
    words = [["Hello", 0.0, 0.4], ["there", 0.5, 0.9], ["friend", 1.0, 1.5]]
    assert heard_part(words, 0.95) == "Hello there"
    spans = [["h", 0.1, 0.3], ["t", 0.4, 0.6]]
    w, how = word_timings("Hello there.", spans, 1.0)
    assert how == "phoneme_alignment" and w == [["Hello", 0.1, 0.3], ["there", 0.4, 0.6]]
    w, how = word_timings("It is 42.", spans, 1.0)  # 3 words, 2 spans
    assert how == "alignment_interpolated" and w[0][1] == 0.1 and w[-1][2] == 0.6


def test_cli_registers_all_distill_subcommands() -> None:
    from voice.cli.main import build_parser

    p = build_parser()
    for argv in (["distill", "generate", "--out", "x", "--n", "1"], ["distill", "stats", "x"],
                 ["distill", "tokenize", "x"], ["bench", "distill"]):
        assert callable(p.parse_args(argv).func)
    for name in ("train", "eval"):
        assert callable(p.parse_args(["distill", name, "--data", "x"]).func)
