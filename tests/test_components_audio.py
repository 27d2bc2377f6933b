"""model.audio: loading, resampling, saving; clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from model.common.errors import ParleyError
from model.audio import load_audio, resample, save_wav


def tone(f: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * f * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float(np.argmax(spec) * sr / len(x))


def test_load_resamples_wrong_rate_and_downmixes(tmp_path) -> None:
    x = tone(440, 44100)
    p = tmp_path / "stereo44k.wav"
    sf.write(str(p), np.stack([x, x], axis=1), 44100, subtype="PCM_16")
    y, sr = load_audio(p, 16000)
    assert sr == 16000 and y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert abs(peak_hz(y, 16000) - 440) < 2
    z, sr0 = load_audio(p)
    assert sr0 == 44100 and len(z) == len(x)


def test_save_load_round_trip(tmp_path) -> None:
    x = tone(300, 22050)
    save_wav(tmp_path / "a.wav", x, 22050)
    y, sr = load_audio(tmp_path / "a.wav")
    assert sr == 22050
    np.testing.assert_allclose(y, x, atol=1 / 16000)


def test_resample_identity_and_length() -> None:
    x = tone(200, 48000, 0.02)  # one 20 ms WebRTC frame
    assert resample(x, 48000, 48000) is not None and len(resample(x, 48000, 16000)) == 320
    with pytest.raises(ParleyError):
        resample(x, 0, 16000)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ParleyError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ParleyError, match="directory"):
        load_audio(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(ParleyError, match="cannot read audio"):
        load_audio(bad)
    trunc = tmp_path / "trunc.wav"
    save_wav(trunc, tone(300, 16000), 16000)
    trunc.write_bytes(trunc.read_bytes()[:30])  # header cut in half
    with pytest.raises(ParleyError):
        load_audio(trunc)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(ParleyError, match="empty"):
        load_audio(empty)
