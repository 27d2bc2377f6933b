"""Small audio I/O helpers (soundfile + soxr; no torchaudio, no ffmpeg).

All audio inside Parley is float32 mono in [-1, 1]; the rates and frame sizes are in
`model.common.audio_constants`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.common.errors import ParleyError


def to_mono_float32(x: np.ndarray) -> np.ndarray:
    """(T,) or (T, C) -> (T,) float32; integer PCM is scaled to [-1, 1]."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ParleyError(f"expected mono or (samples, channels) audio, got shape {x.shape}")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample float32 mono audio with soxr (high quality). Returns float32 (T',)."""
    if sr_in <= 0 or sr_out <= 0:
        raise ParleyError(f"invalid sample rates {sr_in} -> {sr_out}")
    x = to_mono_float32(x)
    if sr_in == sr_out or x.size == 0:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono; resample to `sample_rate` when given.

    Raises ParleyError for a missing, unreadable/corrupt or empty file.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise ParleyError(f"audio file not found: {p}")
    if p.is_dir():
        raise ParleyError(f"expected an audio file, got a directory: {p}")
    try:
        x, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ParleyError(f"cannot read audio file {p}: not a valid audio file ({e})") from None
    x = to_mono_float32(x)
    if x.size == 0:
        raise ParleyError(f"audio file is empty (no samples): {p}")
    if sample_rate is not None and sr != sample_rate:
        x = resample(x, sr, sample_rate)
        sr = sample_rate
    return x, int(sr)


def save_wav(path: str | Path, x: np.ndarray, sr: int) -> None:
    """Write float32 mono audio as 16-bit PCM WAV (clipped to [-1, 1])."""
    import soundfile as sf

    p = Path(path)
    if p.parent and not p.parent.exists():
        raise ParleyError(f"output directory does not exist: {p.parent}")
    x = np.clip(to_mono_float32(x), -1.0, 1.0)
    sf.write(str(p), x, int(sr), subtype="PCM_16", format="WAV")

