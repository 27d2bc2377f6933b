"""Training losses: multi-scale mel reconstruction, multi-scale STFT discriminator (EnCodec's
MS-STFT-D, written with torch.stft: torchaudio is unusable here), hinge adversarial loss and
relative feature matching."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@lru_cache(maxsize=None)
def mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style triangular mel filters (n_mels, n_fft // 2 + 1), area-normalised."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sr / 2)), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size), np.float32)
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[i] = np.maximum(0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb


def mel_spectrogram(x: torch.Tensor, sr: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """x (B, T) -> magnitude mel (B, n_mels, frames), float32."""
    win = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.float(), n_fft, hop_length=n_fft // 4, window=win, return_complex=True).abs()
    fb = torch.from_numpy(mel_filterbank(sr, n_fft, n_mels)).to(x.device)
    return fb @ spec


MEL_SCALES: tuple[tuple[int, int], ...] = ((64, 8), (128, 16), (256, 32), (512, 64), (1024, 80), (2048, 128))


def multiscale_mel_loss(x: torch.Tensor, y: torch.Tensor, sr: int,
                        scales: tuple[tuple[int, int], ...] = MEL_SCALES) -> torch.Tensor:
    """Sum over scales of L1(log mel) + L1(mel): x, y (B, T)."""
    loss = x.new_zeros((), dtype=torch.float32)
    for n_fft, n_mels in scales:
        mx, my = mel_spectrogram(x, sr, n_fft, n_mels), mel_spectrogram(y, sr, n_fft, n_mels)
        loss = loss + F.l1_loss(torch.log(mx.clamp(min=1e-5)), torch.log(my.clamp(min=1e-5)))
        loss = loss + F.l1_loss(mx, my)
    return loss / len(scales)


def mel_distance(x: torch.Tensor, y: torch.Tensor, sr: int) -> float:
    """Eval metric: mean L1 distance of log10 mel (n_fft 1024, 80 mels)."""
    mx, my = mel_spectrogram(x, sr, 1024, 80), mel_spectrogram(y, sr, 1024, 80)
    return float((torch.log10(mx.clamp(min=1e-5)) - torch.log10(my.clamp(min=1e-5))).abs().mean())


class STFTDiscriminator(nn.Module):
    """One scale of EnCodec's MS-STFT-D: 2D convs over (real, imag) of a normalised STFT."""

    def __init__(self, n_fft: int, filters: int = 32, max_filters: int = 1024,
                 dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft = n_fft
        k = (3, 9)
        convs = [weight_norm(nn.Conv2d(2, filters, k, padding=(1, 4)))]
        cin = filters
        for d in dilations:
            cout = min(filters * 2, max_filters)
            convs.append(weight_norm(nn.Conv2d(cin, cout, k, stride=(1, 2), dilation=(d, 1),
                                               padding=(d, 4))))
            cin = cout
        convs.append(weight_norm(nn.Conv2d(cin, cin, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(cin, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # x (B, T) -> logits (B, 1, frames, freq), feature maps
        win = torch.hann_window(self.n_fft, device=x.device)
        z = torch.stft(x.float(), self.n_fft, hop_length=self.n_fft // 4, window=win, normalized=True,
                       return_complex=True)  # (B, F, frames)
        z = torch.stack([z.real, z.imag], 1).transpose(2, 3)  # (B, 2, frames, F)
        feats = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), 0.2)
            feats.append(z)
        return self.post(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, n_ffts: tuple[int, ...] = (1024, 512, 256), filters: int = 32) -> None:
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(n, filters) for n in n_ffts])

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.discs]


def d_hinge_loss(real: list, fake: list) -> torch.Tensor:
    loss = torch.zeros((), device=real[0][0].device)
    for (lr, _), (lf, _) in zip(real, fake):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(real)


def g_adv_and_feat_loss(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Generator hinge loss and relative feature matching (|f_real - f_fake| / mean|f_real|)."""
    adv = torch.zeros((), device=fake[0][0].device)
    feat = torch.zeros((), device=fake[0][0].device)
    n_feat = 0
    for (_, fr), (lf, ff) in zip(real, fake):
        adv = adv + F.relu(1 - lf).mean()
        for a, b in zip(fr, ff):
            feat = feat + F.l1_loss(b, a.detach()) / (a.detach().abs().mean() + 1e-8)
            n_feat += 1
    return adv / len(fake), feat / max(n_feat, 1)
