"""Token shards -> training turns: word-timed monologue, silent turns, splits, codec checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.common.errors import ParleyError
from distill.s2s_data import layout_for, load_turns, word_tokens
from distill.train import make_example


def _write_tokens(d: Path, codec_id: str = "c1") -> None:
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    user = rng.integers(0, 32, (4, 10 + 6 + 5)).astype(np.uint16)
    agent = rng.integers(0, 32, (4, 12 + 0 + 9)).astype(np.uint16)
    meta = [
        {"key": "00000000", "turn": 0, "split": "train", "user_voice": "espeak:en-us+m3@1.0~0", "reply_text": "hi there",
         "word_frames": [["hi", 0.0, 2.5], ["there", 4.2, 8.0]]},
        {"key": "00000001", "turn": 0, "split": "train", "user_voice": "flite:kal@1~0", "reply_text": "",
         "word_frames": []},  # silence case: the agent says nothing
        {"key": "00000002", "turn": 0, "split": "eval", "user_voice": "real:asterisk-en_US_f_Allison",
         "reply_text": "ok", "word_frames": [["ok", 1.0, 3.0]]},
    ]
    np.savez(d / "s0.npz", user=user, user_off=np.array([0, 10, 16, 21]), agent=agent,
             agent_off=np.array([0, 12, 12, 21]), meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    man = {"format": "parley-tokens-v1", "n_q": 4, "bins": 32, "frame_rate": 12.5, "silence": [1, 2, 3, 4],
           "codec_id": codec_id, "shards": {"s0.tar": {"file": "s0.npz"}}}
    (d / "manifest.json").write_text(json.dumps(man))


def fake_encode(text: str) -> list[int]:  # one token per character, ids < 64
    return [ord(c) % 64 for c in text]


def test_load_turns_and_word_timed_monologue(tmp_path: Path) -> None:
    _write_tokens(tmp_path / "a")
    layout = layout_for(tmp_path / "a", text_card=64)
    assert (layout.n_q, layout.card) == (4, 32)
    turns, silence, desc = load_turns(tmp_path / "a", layout, split="train", encode=fake_encode)
    assert [t.name for t in turns] == ["00000000.0", "00000001.0"] and "1 silent" in desc
    assert silence.tolist() == [1, 2, 3, 4] and turns[0].voice == "synthetic"
    assert turns[0].trace == "00000000" and turns[0].user_tokens == [] and turns[0].interrupted_at is None
    toks, frames = word_tokens([["hi", 0.0, 2.5], ["there", 4.2, 8.0]], fake_encode)
    assert toks == fake_encode("hi") + fake_encode(" there") and frames == [0, 0] + [4] * 6
    ex = make_example(turns[0], silence, layout, gap=3, tail=2, max_frames=64)
    a0 = 10 + 3  # agent starts after the user's 10 frames and the gap
    text = ex["text_tgt"]
    assert text[a0] == fake_encode("h")[0] and text[a0 + 4] == fake_encode(" ")[0]
    assert (ex["user_in"][:, 10:] == silence[:, None]).all() and (ex["agent_tgt"][:, :a0] == silence[:, None]).all()
    assert ex["agent_speaking"][a0 : a0 + 12].all() and not ex["agent_speaking"][:a0].any()
    quiet = make_example(turns[1], silence, layout, gap=3, tail=2, max_frames=64)
    assert (quiet["text_tgt"] == layout.text_pad).all() and not quiet["agent_speaking"].any()
    ev, _, _ = load_turns(tmp_path / "a", layout, split="eval", encode=fake_encode)
    assert len(ev) == 1 and ev[0].voice == "real"


def test_several_folders_and_mismatches(tmp_path: Path) -> None:
    _write_tokens(tmp_path / "a")
    _write_tokens(tmp_path / "b")
    layout = layout_for(tmp_path / "a", text_card=64)
    turns, _, _ = load_turns([tmp_path / "a", tmp_path / "b"], layout, encode=fake_encode)
    assert [t.name for t in turns] == ["00000000.0", "00000001.0", "1/00000000.0", "1/00000001.0"]  # keys repeat
    assert [t.trace for t in turns] == ["00000000", "00000001", "1/00000000", "1/00000001"]
    _write_tokens(tmp_path / "c", codec_id="other")
    with pytest.raises(ParleyError):
        load_turns([tmp_path / "a", tmp_path / "c"], layout, encode=fake_encode)
    with pytest.raises(ParleyError):
        load_turns(tmp_path / "a", layout_for(tmp_path / "a", 64).__class__(n_q=8, card=2048, text_card=64),
                   encode=fake_encode)


def test_replies_not_in_english_are_left_out(tmp_path: Path) -> None:
    """Real replies of the SmolLM2 teacher (first CPU prior): the foreign ones are found by the
    bundled langid model, short or numeric English ones are kept; load_turns leaves the foreign
    turns out unless asked to keep them."""
    from distill.language import is_foreign

    foreign = ["Das kann ich heiheiligen Schatzkakaklschutz aus Deutschland gehen.",
               "Je suis désolé en Français, je le paste. Pourquoi je ne sapere pas?",
               "Ou parem que uma viagem de Portugal já estou tambéi ao parleu de tradutos.",
               "आपृकी बादियों के समुस्तान मैवाला, विधा जाहार कर."]
    english = ["The capital of Japan is Tokyo.", "Hiro. Hello!", "143.", "102 + 9 = 207", "Bathroom.", "",
               "I'm not sure what I'd say if I had to choose, but for me, it's the sound of a guitar."]
    assert [is_foreign(t) for t in foreign] == [True] * 4
    assert [is_foreign(t) for t in english] == [False] * len(english)
    _write_tokens(tmp_path / "a")
    meta_path = tmp_path / "a" / "s0.npz"
    z = dict(np.load(meta_path))
    meta = json.loads(z["meta"].tobytes())
    meta[0]["reply_text"] = foreign[0]
    z["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(meta_path, **z)
    layout = layout_for(tmp_path / "a", text_card=64)
    turns, _, desc = load_turns(tmp_path / "a", layout, split="train", encode=fake_encode)
    assert [t.name for t in turns] == ["00000001.0"] and "1 with a reply not in English left out" in desc
    kept, _, _ = load_turns(tmp_path / "a", layout, split="train", encode=fake_encode, keep_foreign=True)
    assert [t.name for t in kept] == ["00000000.0", "00000001.0"]
