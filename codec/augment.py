"""On-the-fly augmentation on the training device (batched, no data on disk).

Each item independently: random gain, random EQ (smooth spectral tilt/bumps), additive coloured
noise, synthetic reverberation (exponentially decaying noise impulse response). No recorded noise
or room impulse responses exist in the registries, so all of them are synthesized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentConfig:
    p_eq: float = 0.5  # probability of a random EQ curve (+-eq_db)
    eq_db: float = 8.0
    p_noise: float = 0.3  # probability of additive noise at snr_db
    snr_db: tuple[float, float] = (12.0, 45.0)
    p_reverb: float = 0.25  # probability of synthetic reverb with RT60 in rt60_s
    rt60_s: tuple[float, float] = (0.1, 0.6)
    gain_db: tuple[float, float] = (-24.0, 0.0)  # relative to full scale after peak normalisation


def _rand(n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=device)


def augment(x: torch.Tensor, sr: int, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """x (B, T) float -> augmented (B, T), peak <= ~0.99."""
    B, T = x.shape
    dev = x.device
    n_fft = 1 << (2 * T - 1).bit_length()
    f = torch.linspace(0, 1, n_fft // 2 + 1, device=dev)  # normalised frequency
    X = torch.fft.rfft(x, n_fft)
    # EQ: gain curve = sum of 4 random cosines over frequency, in dB
    k = torch.arange(1, 5, device=dev, dtype=torch.float32)
    coef = torch.randn(B, 4, device=dev) / k
    phase = torch.rand(B, 4, device=dev) * 6.283
    curve = (coef[..., None] * torch.cos(k[None, :, None] * 3.1416 * f[None, None] + phase[..., None])).sum(1)
    curve = curve / curve.abs().amax(1, keepdim=True).clamp(min=1e-6) * _rand(B, 0, cfg.eq_db, dev)[:, None]
    use_eq = (torch.rand(B, device=dev) < cfg.p_eq).float()[:, None]
    X = X * torch.pow(10.0, curve * use_eq / 20)
    # reverb: h = direct + exp-decaying noise tail (RT60 -> decay), convolution in the frequency domain
    rt = _rand(B, *cfg.rt60_s, dev)
    L = min(int(0.8 * sr), T)
    t = torch.arange(L, device=dev) / sr
    tail = torch.randn(B, L, device=dev) * torch.exp(-6.9 * t[None] / rt[:, None])
    tail[:, : int(0.002 * sr)] = 0
    h = tail * _rand(B, 0.1, 0.6, dev)[:, None] / tail.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-6)
    h[:, 0] += 1.0
    use_rev = torch.rand(B, device=dev) < cfg.p_reverb
    H = torch.fft.rfft(h, n_fft)
    X = torch.where(use_rev[:, None], X * H, X)
    y = torch.fft.irfft(X, n_fft)[:, :T]
    # noise: white / pink / brown by a power-law spectrum, at a random SNR
    slope = torch.randint(0, 3, (B,), device=dev).float()  # 0 white, 1 pink, 2 brown
    N = torch.fft.rfft(torch.randn(B, T, device=dev), n_fft)
    N = N / (f[None] * 100 + 1).pow(slope[:, None] / 2)
    noise = torch.fft.irfft(N, n_fft)[:, :T]
    snr = _rand(B, *cfg.snr_db, dev)
    p_sig = y.pow(2).mean(1).clamp(min=1e-8)
    p_noise = noise.pow(2).mean(1).clamp(min=1e-8)
    scale = torch.sqrt(p_sig / p_noise / torch.pow(10.0, snr / 10))
    use_noise = (torch.rand(B, device=dev) < cfg.p_noise).float()
    y = y + noise * (scale * use_noise)[:, None]
    # gain: normalise peak then random level
    peak = y.abs().amax(1, keepdim=True).clamp(min=0.05)  # silence stays quiet
    gain = torch.pow(10.0, _rand(B, *cfg.gain_db, dev) / 20)[:, None]
    return (y / peak * 0.99 * gain).clamp(-1, 1)
