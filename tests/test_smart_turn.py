"""Smart Turn (model/components/smart_turn.py): pipecat's bundled model, our features, the judge's rules."""

from __future__ import annotations

import asyncio
import importlib.util
from importlib.metadata import distribution

import numpy as np
import pytest

from model.components.smart_turn import SmartTurn, features


def test_features_are_pipecats_own() -> None:
    """whisper.log_mel_spectrogram of the normalised last 8 s == pipecat's numpy extractor (read from its file,
    without importing pipecat)."""
    src = distribution("pipecat-ai").locate_file("pipecat/audio/turn/smart_turn/_whisper_features.py")
    spec = importlib.util.spec_from_file_location("pipecat_whisper_features", str(src))
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    rng = np.random.default_rng(0)
    for seconds in (1.3, 9.0):  # padded at the front / cut to the last 8 s
        x = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        x8 = np.pad(x[-128000:], (max(0, 128000 - len(x)), 0))
        want = ref.compute_whisper_log_mel_features(x8, do_normalize=True)
        got = features([x])[0]
        assert got.shape == want.shape == (80, 800)
        np.testing.assert_allclose(got, want, atol=2e-3)


@pytest.mark.slow
def test_finished_sentences_score_as_finished_and_batches_equal_single_clips() -> None:
    from piper import SynthesisConfig

    from model.audio import resample
    from model.components.tts import load_voice

    st = SmartTurn.load()
    v = load_voice("joe")
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # the same audio every run (piper samples noise)
    clips = []
    for text in ("Can you tell me a short story about a cat?", "What should I cook for dinner tonight?",
                 "How far away is the moon?"):
        a = np.concatenate([c.audio_float_array for c in v.voice.synthesize(text, syn_config=quiet)])
        a = resample(a.astype(np.float32), v.sample_rate, 16000).astype(np.float32)
        a = a[: np.nonzero(np.abs(a) > 0.01)[0][-1] + 1]  # to the last sound, then 300 ms of silence
        clips.append(np.concatenate([a, np.zeros(4800, np.float32)]))
    ps = st.prob_batch(clips)
    assert (ps >= 0.9).all(), ps  # 2026-12-03: 0.923, 0.985, 0.950 (with piper's noise one run gave 0.64)
    np.testing.assert_allclose(ps, [st.prob(c) for c in clips], atol=1e-4)


class _ASR:
    def transcribe(self, audio_16k: np.ndarray) -> str:
        return " what is the capital of france "


def _judge(rule: str, p_text: float, p_audio: float):  # noqa: ANN202 - a TurnJudge with fixed scores
    from voice.engines.turn_judge import JudgeConfig, TurnJudge

    judge = TurnJudge(JudgeConfig(rule=rule), asr=_ASR(), llm=object())
    judge.score = lambda text, context=None: p_text
    if judge.smart is not None:
        judge.smart.prob = lambda audio: p_audio
    return judge


def test_judge_rules() -> None:
    audio = np.zeros(16000, np.float32)

    async def judged(rule: str, p_text: float, p_audio: float) -> tuple[float, str | None, dict, float, str]:
        judge = _judge(rule, p_text, p_audio)
        times: dict[str, float] = {}
        try:
            prob, text = await judge.judge_async(audio, times=times)
            later = await asyncio.wrap_future(judge.transcribe(audio))
            return prob, text, times, judge.threshold, later
        finally:
            judge.close()

    prob, text, times, thr, _ = asyncio.run(judged("text", 0.97, 0.1))
    assert (prob, text) == (0.97, "what is the capital of france") and set(times) == {"asr", "score"}
    prob, text, times, thr, later = asyncio.run(judged("audio", 0.1, 0.8))
    assert (prob, text, thr) == (0.8, None, 0.5) and set(times) == {"audio"}  # no Whisper before the decision
    assert later == "what is the capital of france"  # the transcript follows
    assert asyncio.run(judged("both", 0.97, 0.8))[0] == 0.97
    assert asyncio.run(judged("both", 0.97, 0.3))[0] == 0.0  # Smart Turn says the user goes on
    with pytest.raises(ValueError, match="unknown end-of-turn rule"):
        _judge("loud", 0.5, 0.5)
