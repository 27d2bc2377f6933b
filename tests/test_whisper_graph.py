"""Whisper's greedy decoding with a static cache (model/components/whisper_graph.py) equals whisper.decode:
the same text, no_speech_prob and avg_logprob, one clip at a time and batched (eager on CPU; the CUDA graphs
in the gpu-marked test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _clips() -> list[np.ndarray]:
    """The bench's spoken questions (flite here; on the GPU host, where flite is missing, the kit's FLACs in
    $PARLEY_QUESTIONS) and their first halves, and a clip of faint noise."""
    import os

    import soxr

    from voice.bench.utterances import default_utterances, load_utterances

    folder = os.environ.get("PARLEY_QUESTIONS")
    out = []
    for u in load_utterances(folder) if folder else default_utterances():
        x = soxr.resample(u.audio[u.bounds.start: u.bounds.end], 48000, 16000).astype(np.float32)
        out += [x, x[: len(x) // 2]]
    return out + [np.zeros(16000, np.float32) + 1e-3 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)]


def _compare(device: str) -> None:
    import whisper

    from model.components.asr import WhisperASR, log_mel
    from model.components.whisper_graph import StaticGreedy

    asr = WhisperASR.load("tiny.en", device=device)
    clips = _clips()
    mel = log_mel(clips, asr.model.dims.n_mels, device)
    opts = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=device == "cuda", sample_len=96)
    with torch.inference_mode():
        want = whisper.decode(asr.model, mel, opts)
    dec = StaticGreedy(asr.model, opts)
    if device == "cuda":
        dec.prepare()  # every batch shape's graph and a silent decode (as the server's warm-up does)
    got = dec.decode(mel)  # batched (13 clips: a batch of 16)
    single = [dec.decode(mel[i: i + 1])[0] for i in range(3)]
    tol = 1e-3 if device == "cpu" else 2e-2
    for w, (text, lp, ns) in zip(want, got):
        assert text == w.text.strip(), (text, w.text)
        assert abs(lp - w.avg_logprob) < tol and abs(ns - w.no_speech_prob) < tol, (lp, w.avg_logprob, ns, w.no_speech_prob)
    assert [t for t, _, _ in single] == [t for t, _, _ in got[:3]]
    assert "capital" in got[0][0].lower()


@pytest.mark.slow
def test_static_greedy_equals_whisper_decode_on_cpu() -> None:
    _compare("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_greedy_equals_whisper_decode_on_cuda() -> None:
    _compare("cuda")
