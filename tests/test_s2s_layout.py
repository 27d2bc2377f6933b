"""Stream layout of the direct speech model: delays, inputs/targets, text alignment, validation."""

from __future__ import annotations

import numpy as np
import pytest

from model.layout import (
    StreamLayout,
    Undelayer,
    align_text,
    place_text,
    build_inputs,
    delay_codes,
    undelay_codes,
    validate_layout,
    validate_streams,
)

MOSHI = StreamLayout(n_q=4, card=16, text_card=100, delays=(0, 1, 1, 1))
STAIR = StreamLayout(n_q=4, card=16, text_card=100, delays=(0, 1, 2, 3))


@pytest.mark.parametrize("layout", [MOSHI, STAIR, StreamLayout(n_q=4, card=16, text_card=100, delays=(0,) * 4)])
def test_delay_roundtrip_and_streaming_undelay(layout: StreamLayout) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, layout.card, size=(layout.n_q, 12))
    delayed = delay_codes(codes, layout)
    for k, d in enumerate(layout.delays):
        assert (delayed[k, :d] == layout.audio_init).all()
        assert (delayed[k, d:] == codes[k, : 12 - d]).all()
    full = undelay_codes(delayed, layout)
    assert (full == codes[:, : 12 - layout.max_delay]).all()
    und = Undelayer(layout)
    frames = [f for f in (und.push(delayed[:, t]) for t in range(12)) if f is not None]
    assert len(frames) == 12 - layout.max_delay
    assert (np.stack(frames, axis=1) == full).all()


def test_build_inputs_follows_the_picture() -> None:
    layout = MOSHI
    rng = np.random.default_rng(1)
    T = 6
    user = rng.integers(0, 16, size=(4, T))
    agent = rng.integers(0, 16, size=(4, T))
    text = np.array([7, layout.text_pad, 8, 9, layout.text_pad, layout.text_pad])
    ex = build_inputs(user, agent, text, layout)
    assert (ex["user_in"] == user).all()  # user frame t heard at step t
    assert ex["text_in"][0] == layout.text_bos and (ex["text_in"][1:] == text[:-1]).all()
    assert (ex["agent_in"][:, 0] == layout.audio_init).all()
    assert (ex["agent_in"][:, 1:] == ex["agent_tgt"][:, :-1]).all()
    assert ex["agent_tgt"][0, 0] == agent[0, 0] and ex["agent_tgt"][1, 2] == agent[1, 1]
    assert not ex["agent_mask"][1:, 0].any() and ex["agent_mask"][:, 1:].all()
    assert (ex["text_tgt"] == text).all()


def test_align_text_keeps_order_one_token_per_frame() -> None:
    layout = MOSHI
    toks = [11, 12, 13, 14, 15]
    out = align_text(toks, start=3, end=9, n_steps=12, layout=layout, char_lens=[5, 1, 1, 1, 8])
    placed = out[out != layout.text_pad]
    assert list(placed) == toks
    assert out[:3].tolist() == [layout.text_pad] * 3 and out[3] == 11  # starts with the speech
    assert np.nonzero(out == 12)[0][0] > 3
    crowded = align_text(list(range(20)), start=0, end=4, n_steps=10, layout=layout)
    assert crowded.tolist() == list(range(10))  # packed, then cut at n_steps
    assert (align_text([], 0, 4, 5, layout) == layout.text_pad).all()


def test_validation_rejects_bad_layouts_and_streams() -> None:
    validate_layout(MOSHI)
    validate_layout(STAIR)
    for bad in (
        StreamLayout(n_q=4, card=16, text_card=100, delays=(0, 1)),
        StreamLayout(n_q=4, card=16, text_card=100, delays=(1, 1, 1, 1)),
        StreamLayout(n_q=4, card=16, text_card=100, delays=(0, 2, 1, 1)),
        StreamLayout(n_q=4, card=16, text_card=100, delays=(0, -1, 0, 0)),
    ):
        with pytest.raises(ValueError):
            validate_layout(bad)
    ok = np.zeros((4, 5), dtype=np.int64)
    validate_streams(ok, ok, np.zeros(5, dtype=np.int64), MOSHI)
    with pytest.raises(ValueError):
        validate_streams(ok + 16, ok, np.zeros(5, dtype=np.int64), MOSHI)  # code == card
    with pytest.raises(ValueError):
        validate_streams(ok, ok[:, :4], np.zeros(5, dtype=np.int64), MOSHI)
    with pytest.raises(ValueError):
        validate_streams(ok, ok, np.full(5, MOSHI.text_bos), MOSHI)  # BOS is input-only
    assert StreamLayout.from_dict({"n_q": 4, "card": 16, "text_card": 100, "delays": [0, 1, 1, 1]}) == MOSHI


def test_place_text_from_word_timings() -> None:
    out = place_text([5, 6, 7, 8], [0, 0, 3, 3], start=2, n_steps=8, layout=MOSHI)
    assert out.tolist() == [100, 100, 5, 6, 100, 7, 8, 100]
    assert place_text([5, 6], [9, 9], start=0, n_steps=10, layout=MOSHI).tolist()[-1] == 5  # cut at the end
    with pytest.raises(ValueError):
        place_text([5], [0, 1], 0, 4, MOSHI)
