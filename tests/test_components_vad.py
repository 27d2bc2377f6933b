"""Silero VAD: real speech vs silence/noise, per-stream state, batching, parity with silero-vad."""

from __future__ import annotations

import numpy as np
import pytest

from components_util import needs_prompts, speech
from model.common.audio_constants import VAD_CHUNK
from model.common.errors import ParleyError
from model.components.vad import SileroVAD


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD.load()


def chunks(x: np.ndarray) -> np.ndarray:
    return x[: len(x) // VAD_CHUNK * VAD_CHUNK].reshape(-1, VAD_CHUNK)


@needs_prompts
def test_speech_vs_silence_and_noise(vad: SileroVAD) -> None:
    x = speech("vm-options")  # 16 s of real speech with short pauses
    p = vad.probs(x)
    assert (p > 0.5).mean() > 0.6, "most chunks of a spoken prompt are speech"
    rng = np.random.default_rng(0)
    assert vad.probs(np.zeros(16000 * 3, np.float32)).max() < 0.2
    white = (rng.standard_normal(16000 * 3) * 0.05).astype(np.float32)
    assert vad.probs(white).max() < 0.3
    hum = (0.1 * np.sin(2 * np.pi * 120 * np.arange(16000 * 3) / 16000)).astype(np.float32)
    assert vad.probs(hum).max() < 0.3


@needs_prompts
def test_speech_onset_inside_silence(vad: SileroVAD) -> None:
    x = speech("vm-sorry")
    pad = np.zeros(16000 * 2, np.float32)
    p = vad.probs(np.concatenate([pad, x, pad]))
    t = np.arange(len(p)) * VAD_CHUNK / 16000
    assert p[t < 1.8].max() < 0.3
    assert p[(t > 2.0) & (t < 2.0 + len(x) / 16000)].max() > 0.9
    assert p[t > 2.0 + len(x) / 16000 + 1.0].max() < 0.3


@needs_prompts
def test_streams_are_independent_and_reset(vad: SileroVAD) -> None:
    a, b = chunks(speech("vm-sorry")), chunks(speech("auth-incorrect"))
    n = min(len(a), len(b))
    alone_a = [vad.stream().push(c) for c in a[:1]]  # a fresh stream per call: no history
    sa, sb = vad.stream(), vad.stream()
    pa, pb = [], []
    for i in range(n):  # interleaved pushes must not leak state between streams
        pa.append(sa.push(a[i]))
        pb.append(sb.push(b[i]))
    ref = vad.stream()
    np.testing.assert_allclose(pa, [ref.push(c) for c in a[:n]], atol=1e-6)
    assert pa[0] == pytest.approx(alone_a[0], abs=1e-6)
    sa.reset()
    assert sa.state.steps == 0
    np.testing.assert_allclose([sa.push(c) for c in a[:n]], pa, atol=1e-6)
    # state matters: the same chunk scores differently with and without its history
    assert any(abs(vad.stream().push(a[i]) - pa[i]) > 1e-3 for i in range(1, n))


@needs_prompts
def test_batched_step_matches_single_streams(vad: SileroVAD) -> None:
    a, b = chunks(speech("vm-sorry")), chunks(speech("auth-incorrect"))
    n = min(len(a), len(b), 60)
    sa, sb = vad.stream(), vad.stream()
    single = np.array([[sa.push(a[i]), sb.push(b[i])] for i in range(n)])
    states = [vad.stream().state, vad.stream().state]
    batched = np.array([vad.step(states, np.stack([a[i], b[i]])) for i in range(n)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@needs_prompts
def test_matches_silero_package_wrapper(vad: SileroVAD) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import OnnxWrapper  # importing it sets torch threads to 1

        ref = OnnxWrapper(str(vad.path), force_onnx_cpu=True)
        c = chunks(speech("vm-sorry"))
        want = [float(ref(torch.from_numpy(x.copy()), 16000)[0, 0]) for x in c]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(vad.probs(np.concatenate(c)), want, atol=1e-5)


def test_bad_chunk_and_bad_model(vad: SileroVAD, tmp_path) -> None:
    with pytest.raises(ParleyError, match="512"):
        vad.stream().push(np.zeros(480, np.float32))  # 30 ms at 16 kHz is not a VAD chunk
    with pytest.raises(ParleyError, match="not found"):
        SileroVAD.load(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ParleyError, match="cannot load"):
        SileroVAD.load(bad)
