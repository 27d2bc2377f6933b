"""Semantic teacher for codec training: the bundled Whisper tiny.en encoder, frozen.

Mimi distils WavLM features into its first codebook; Parley distils Whisper's encoder (the model
that later has to understand the codec's speech), which ships with the project. The teacher is
a self-contained copy of Whisper's `AudioEncoder` forward, so that a GPU machine without the
`openai-whisper` package (its import pulls tiktoken and numba) can run it from one safetensors
file holding the encoder weights, the mel filters and the dimensions.

Framing: 16 kHz audio -> log-mel at 100 Hz (n_fft 400, hop 160) -> conv stride 2 -> 50 Hz
features (B, T / 320, 384). `pool_to_frames` averages them down to the codec's frame rate
(2 per frame at 25 Hz, 4 at 12.5 Hz). Whisper's positional embedding is sliced to the clip, so
clips shorter than 30 s need no padding (the features differ a little from a 30 s pass; a
teacher only has to be consistent).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
MEL_HOP = 160  # 10 ms: 100 Hz mel frames
FEATURE_HOP = 2 * MEL_HOP  # conv2 has stride 2: 50 Hz features, 320 samples each
FORMAT = "parley-whisper-teacher-v1"


class _Block(nn.Module):
    """Whisper's `ResidualAttentionBlock` without cross-attention (same parameter names)."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.attn = nn.ModuleDict({"query": nn.Linear(d, d), "key": nn.Linear(d, d, bias=False),
                                   "value": nn.Linear(d, d), "out": nn.Linear(d, d)})
        self.attn_ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        h = self.attn_ln(x)
        q, k, v = (self.attn[n](h).view(B, T, self.n_head, -1).transpose(1, 2) for n in ("query", "key", "value"))
        a = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        x = x + self.attn["out"](a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.mlp_ln(x))


class WhisperTeacher(nn.Module):
    """Frozen Whisper encoder: audio (B, T) 16 kHz -> features (B, T // 320, n_state)."""

    def __init__(self, n_mels: int = 80, n_ctx: int = 1500, n_state: int = 384, n_head: int = 6,
                 n_layer: int = 4) -> None:
        super().__init__()
        self.dims = {"n_mels": n_mels, "n_ctx": n_ctx, "n_state": n_state, "n_head": n_head,
                     "n_layer": n_layer}
        self.conv1 = nn.Conv1d(n_mels, n_state, 3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(n_ctx, n_state))
        self.register_buffer("mel_filters", torch.zeros(n_mels, N_FFT // 2 + 1))
        self.blocks = nn.ModuleList([_Block(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = nn.LayerNorm(n_state)
        self.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.dims["n_state"]

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, n_mels, T // 160), whisper's log-mel (dynamic range clamp per clip)."""
        win = torch.hann_window(N_FFT, device=x.device)
        spec = torch.stft(x.float(), N_FFT, MEL_HOP, window=win, return_complex=True)
        mel = self.mel_filters.float() @ spec[..., :-1].abs() ** 2
        logm = mel.clamp(min=1e-10).log10()
        logm = torch.maximum(logm, logm.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (logm + 4.0) / 4.0

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) log-mel -> (B, ceil(F / 2), n_state)."""
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(f"teacher input longer than {self.dims['n_ctx']} frames (30 s)")
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_post(x)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, F, n_state); audio over 30 s goes through in 30 s windows."""
        win = self.dims["n_ctx"] * FEATURE_HOP  # 480000 samples
        parts = [self.encode_mel(self.log_mel(audio[:, i : i + win])) for i in range(0, audio.shape[-1], win)]
        return torch.cat(parts, dim=1)


def pool_to_frames(feats: torch.Tensor, frames: int, hop: int) -> torch.Tensor:
    """50 Hz teacher features (B, F, C) -> (B, frames, C) at a codec hop (a multiple of 320)."""
    if hop % FEATURE_HOP:
        raise ValueError(f"codec hop {hop} is not a multiple of {FEATURE_HOP} samples")
    k = hop // FEATURE_HOP
    need = frames * k
    if feats.shape[1] < need:
        feats = F.pad(feats, (0, 0, 0, need - feats.shape[1]), mode="replicate")
    return feats[:, :need].reshape(feats.shape[0], frames, k, -1).mean(2)


def semantic_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mimi's distillation loss: mean (1 - cosine) over frames; pred, target (B, T, C)."""
    return (1 - F.cosine_similarity(pred.float(), target.float(), dim=-1)).mean()


def teacher_from_whisper(whisper_model: nn.Module, mel_filters: torch.Tensor) -> WhisperTeacher:
    """Build the teacher from an openai-whisper `Whisper` model's encoder."""
    d = whisper_model.dims
    t = WhisperTeacher(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
    sd = {k: v for k, v in whisper_model.encoder.state_dict().items()}
    sd["mel_filters"] = mel_filters.float()
    t.load_state_dict(sd)
    return t.eval()


def save_teacher(teacher: WhisperTeacher, path: str | Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}
    sd = {k: v if k == "mel_filters" else v.half() for k, v in sd.items()}  # 16 MB instead of 33
    save_file(sd, str(path), metadata={"format": FORMAT, "dims": json.dumps(teacher.dims)})


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> WhisperTeacher:
    """Load a teacher file written by `save_teacher` (`parley codec export-teacher`)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a bad file
        raise ValueError(f"{path}: not a readable teacher file ({e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a Parley Whisper teacher (format {meta.get('format')!r})")
    t = WhisperTeacher(**json.loads(meta["dims"]))
    t.load_state_dict({k: v.float() for k, v in sd.items()})
    return t.to(device).eval()
