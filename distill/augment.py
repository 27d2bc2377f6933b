"""User-speech augmentation: natural pauses, synthetic noise, synthetic reverberation, gain.

No recorded noise or room impulse responses ship in the registries (FACTS.md), so both are
synthesized: coloured noise (white / pink / brown), mains hum, "babble" (band-passed noise with a
syllable-rate envelope); RIRs as exponentially decaying noise with a direct path (RT60 drawn per
trace). All draws come from the caller's rng: same rng state -> same audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.common.audio_constants import SPEECH_SR


@dataclass(frozen=True)
class AugmentParams:
    noise: str  # none | white | pink | brown | hum | babble
    snr_db: float
    rt60_s: float  # 0 = dry
    gain_db: float
    lead_s: float  # silence before the speech
    tail_s: float  # silence after it

    def to_dict(self) -> dict:
        return asdict(self)


def sample_params(rng: np.random.Generator) -> AugmentParams:
    noise = str(rng.choice(["none", "white", "pink", "brown", "hum", "babble"], p=[0.2, 0.15, 0.25, 0.1, 0.1, 0.2]))
    return AugmentParams(
        noise=noise,
        snr_db=round(float(rng.uniform(5, 35)), 1),
        rt60_s=round(float(rng.choice([0.0, rng.uniform(0.15, 0.8)], p=[0.4, 0.6])), 2),
        gain_db=round(float(rng.uniform(-12, 4)), 1),
        lead_s=round(float(rng.uniform(0.1, 0.5)), 2),
        tail_s=round(float(rng.uniform(0.2, 0.6)), 2),
    )


def join_with_pauses(clips: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Join clause clips with natural pauses (150-700 ms); returns audio and the pauses used."""
    out, pauses = [], []
    for i, c in enumerate(clips):
        if i:
            p = float(rng.uniform(0.15, 0.7))
            pauses.append(round(p, 3))
            out.append(np.zeros(int(p * SPEECH_SR), np.float32))
        out.append(c.astype(np.float32))
    return (np.concatenate(out) if out else np.zeros(0, np.float32)), pauses


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / SPEECH_SR
        f0 = float(rng.choice([50.0, 60.0]))
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5))
        return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
    w = rng.standard_normal(n)
    if kind == "white":
        return w.astype(np.float32)
    spec = np.fft.rfft(w)
    f = np.fft.rfftfreq(n, 1 / SPEECH_SR)
    f[0] = f[1] if n > 1 else 1.0
    if kind == "pink":
        spec /= np.sqrt(f)
    elif kind == "brown":
        spec /= f
    elif kind == "babble":  # speech band + syllable-rate (~4 Hz) amplitude modulation
        spec *= (f > 200) & (f < 3500)
    x = np.fft.irfft(spec, n)
    if kind == "babble":
        env = np.abs(np.convolve(rng.standard_normal(n // 400 + 2), np.ones(3) / 3, "same"))
        x *= np.interp(np.arange(n), np.linspace(0, n, len(env)), env)
    return x.astype(np.float32)


def synthetic_rir(rt60: float, rng: np.random.Generator) -> np.ndarray:
    n = int(rt60 * SPEECH_SR)
    t = np.arange(n) / SPEECH_SR
    decay = np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir = rng.standard_normal(n) * decay * 0.3
    rir[0] = 1.0  # direct path
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def apply(clean: np.ndarray, p: AugmentParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (clean padded with lead/tail silence, augmented version of it); both float32, same length."""
    clean = np.concatenate([np.zeros(int(p.lead_s * SPEECH_SR), np.float32), clean.astype(np.float32),
                            np.zeros(int(p.tail_s * SPEECH_SR), np.float32)])
    x = clean
    if p.rt60_s > 0:
        x = np.convolve(x, synthetic_rir(p.rt60_s, rng))[: len(clean)].astype(np.float32)
    if p.noise != "none" and len(x):
        nz = colored_noise(p.noise, len(x), rng)
        speech_rms = _rms(clean[np.abs(clean) > 1e-4]) if np.any(np.abs(clean) > 1e-4) else 0.05
        x = x + nz * (speech_rms / _rms(nz)) * 10 ** (-p.snr_db / 20)
    x = x * 10 ** (p.gain_db / 20)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.99:  # keep it unclipped: gain is a level change, not distortion
        x = x * (0.99 / peak)
    return clean, x.astype(np.float32)


def silence_clip(seconds: float, p: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Room tone only (a 'silence' case): the noise of `p` at a quiet level, no speech."""
    n = int(seconds * SPEECH_SR)
    kind = p.noise if p.noise != "none" else "pink"
    nz = colored_noise(kind, n, rng)
    return (nz / _rms(nz) * 10 ** ((-50 + rng.uniform(0, 15)) / 20)).astype(np.float32)
