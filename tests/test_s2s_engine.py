"""The direct engine on a tiny random speech model and a tiny random codec: the engine interface,
batched sessions, reply end rules, barge-in (closing the reply generator) and slot release."""

from __future__ import annotations

import asyncio
import copy
import time

import numpy as np
import pytest

pytest.importorskip("model.llama")

from tests.test_s2s_model import tiny_model  # noqa: E402
from voice.engines.base import AgentAudio, Stage, UserTurn  # noqa: E402


@pytest.fixture(scope="module")
def parts():
    from codec.model import CodecConfig, ParleyCodec

    import torch

    torch.manual_seed(0)
    codec = ParleyCodec(CodecConfig(n_filters=4, dimension=16, n_q=4, bins=16, lstm=1)).eval()
    return tiny_model(), codec


def make_engine(parts, judge=None, **kw):  # noqa: ANN001
    from voice.engines.direct import DirectConfig, DirectEngine

    model, codec = parts
    cfg = DirectConfig(device="cpu", max_sessions=2, max_frames=256, **kw)
    codec = copy.deepcopy(codec)  # each engine's clock streams its codec (the test makes several)
    return DirectEngine(cfg, model=model, codec=codec, detokenize=lambda ids: " ".join(f"w{i}" for i in ids),
                        judge=judge)


async def _reply(sess, n_feed_s: float = 1.0, close_after: int | None = None) -> list:
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    for i in range(int(n_feed_s * 16000 / 512)):
        sess.feed((0.1 * rng.standard_normal(512)).astype(np.float32), t0 + i * 0.032)
    turn = UserTurn(1, np.zeros(16000, np.float32), t_speech_end=t0, t_decided=time.monotonic())
    events = []
    agen = sess.respond(turn)
    async for ev in agen:
        events.append(ev)
        if close_after is not None and sum(isinstance(e, AgentAudio) for e in events) >= close_after:
            await agen.aclose()  # what the server's task cancellation does on barge-in
            break
    return events


def test_two_sessions_reply_until_max(parts) -> None:
    eng = make_engine(parts, speech_rms=-1.0, max_reply_s=0.8)  # every frame counts as speech

    async def main():
        a, b = eng.session(), eng.session()
        ra, rb = await asyncio.gather(_reply(a), _reply(b))
        await a.close()
        await b.close()
        await eng.close()
        return ra, rb

    for events in asyncio.run(main()):
        audio = [e for e in events if isinstance(e, AgentAudio)]
        assert isinstance(events[0], Stage) and events[0].name == "engine"
        assert all(e.sample_rate == 16000 and e.audio.shape == (1280,) and np.isfinite(e.audio).all() for e in audio)
        assert len(audio) == 10  # max_reply_s / 80 ms (frames said since the speech end count too)


def test_quiet_model_gives_up_and_barge_in_releases(parts) -> None:
    eng = make_engine(parts, speech_rms=1e9, start_timeout_s=0.4)  # never loud enough

    async def quiet():
        s = eng.session()
        ev = await _reply(s)
        await s.close()
        await eng.close()
        return ev

    assert not [e for e in asyncio.run(quiet()) if isinstance(e, AgentAudio)]

    eng2 = make_engine(parts, speech_rms=-1.0, max_reply_s=10.0)

    async def barge():
        s = eng2.session()
        ev = await _reply(s, close_after=3)
        assert not s.responding  # the reply's clean-up ran: listening again
        s.feed(np.zeros(1280, np.float32), time.monotonic())
        await s.close()
        s2, s3 = eng2.session(), eng2.session()  # both slots free again
        with pytest.raises(RuntimeError):
            eng2.session()
        await s2.close()
        await s3.close()
        await eng2.close()
        return ev

    ev = asyncio.run(barge())
    assert sum(isinstance(e, AgentAudio) for e in ev) == 3


@pytest.mark.parametrize("fast", [True, False])
def test_cpu_engine_streams_the_fast_codec(parts, fast: bool) -> None:
    """On CPU the frame clock streams the codec through codec/fast.py (ONNX Runtime) by default."""
    from codec.fast import FastCodec

    eng = make_engine(parts, fast_codec=fast)
    try:
        assert isinstance(eng.clock.codec, FastCodec) == fast
        assert eng.info()["codec_runtime"] == ("onnx" if fast else "torch")
    finally:
        asyncio.run(eng.close())


def test_codec_mismatch_warns(tmp_path, tiny_codec, caplog) -> None:  # noqa: ANN001
    """A speech model trained on another codec version's tokens loads with a warning naming both."""
    import json
    import logging

    from codec.io import codec_id, load_codec
    from voice.engines.direct import _check_codec

    w = tmp_path / "s2s"
    w.mkdir()
    loaded = load_codec(tiny_codec)
    assert loaded.codec_id == codec_id(tiny_codec)
    for trained_on, warns in ((codec_id(tiny_codec), False), ("0123456789abcdef", True)):
        (w / "manifest.json").write_text(json.dumps({"codec_id": trained_on}))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="voice.engines.direct"):
            _check_codec(w, loaded)
        assert ("trained on codec 0123456789abcdef" in caplog.text) == warns
    caplog.clear()  # an injected codec of unknown version (no codec_id) is not checked
    with caplog.at_level(logging.WARNING, logger="voice.engines.direct"):
        _check_codec(w, object())
    assert caplog.text == ""


def test_the_engine_feeds_the_silence_the_model_was_trained_on() -> None:
    """Missing and muted frames are the token manifests' silence (steady state of zeros through the
    shipped codec), not the last frame of a short zero clip, which differs in most codebooks: codes
    the model never saw derailed the served replies (2026-12-02)."""
    import torch

    from codec import load_codec
    from codec.io import silence_codes
    from model.common.paths import WEIGHTS_DIR
    from voice.engines.direct import DirectConfig, DirectEngine

    if not (WEIGHTS_DIR / "codec" / "manifest.json").exists():
        pytest.skip("needs weights/codec")
    codec = load_codec(WEIGHTS_DIR / "codec").eval()
    want = silence_codes(codec).tolist()
    with torch.no_grad():
        edge = codec.encode(torch.zeros(1, codec.hop_length * 4))[0, :, -1].tolist()
    assert edge != want  # (the premise: the short clip's frame is not silence's codes)
    e = DirectEngine(DirectConfig(weights="tiny", device="cpu", max_sessions=1, max_frames=64), codec=codec,
                     detokenize=str)
    try:
        assert e.silence.tolist() == want and e.clock.silence.tolist() == want
    finally:
        asyncio.run(e.close())
