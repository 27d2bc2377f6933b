"""The Parley codec: causal SEANet encoder -> RVQ -> causal SEANet decoder, streamable.

Audio framing of the shipped weights (weights/codec, v2 = variant 25hz-sem-bypass):
  SAMPLE_RATE = 16000 Hz          # the rate of the data, Whisper and Silero VAD
  HOP = 640 samples               # ratios 8 * 5 * 4 * 4
  FRAME_RATE = 16000 / 640        # 25 Hz frames (40 ms)
  8 codebooks x 2048 entries      # 8 * 11 bits * 25 Hz = 2.2 kbps
`CodecConfig()` itself is the v1 layout (12.5 Hz, hop 1280, 1.1 kbps); code reads the framing from
the loaded codec (`hop_length`, `frame_rate`), never from these constants.

`ParleyCodec.encode(wav)` / `.decode(codes)` run a full pass; inside `with codec.streaming(B):`
the same calls continue streams chunk by chunk (chunks: multiples of HOP samples / whole frames).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from codec.quantization import QuantizedResult, ResidualVectorQuantizer
from codec.seanet import SEANetDecoder, SEANetEncoder
from codec.streaming import State, StreamingModule
from model.common.audio_constants import CODEC_FRAME_RATE as FRAME_RATE  # noqa: F401 - codec API
from model.common.audio_constants import CODEC_HOP as HOP  # noqa: F401 - codec API
from model.common.audio_constants import SPEECH_SR as SAMPLE_RATE


def _cpu_conv_flags(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """CPU inference without oneDNN: its per-call weight reordering made one-frame streaming
    1.8x slower (and the full pass 1.25x slower) in `parley codec bench` on this machine."""
    if x.device.type == "cpu" and not torch.is_grad_enabled():
        return no_mkldnn()
    return contextlib.nullcontext()


@contextlib.contextmanager
def no_mkldnn() -> Iterator[None]:
    """CPU kernels without oneDNN: 1.8x faster for one-frame streaming here (codec/README.md)."""
    # torch.backends.mkldnn.flags() also sets TF32 options and warns on every use
    prev = torch.backends.mkldnn.enabled
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(prev)


@dataclass(frozen=True)
class CodecConfig:
    sample_rate: int = SAMPLE_RATE  # audio rate in Hz
    channels: int = 1
    ratios: tuple[int, ...] = (8, 8, 5, 4)  # decoder upsampling order; encoder uses them reversed
    n_filters: int = 32  # width of the first conv; doubles at each downsampling
    n_residual_layers: int = 1
    dimension: int = 128  # latent / codebook dimension
    lstm: int = 2  # LSTM layers at the bottleneck (encoder and decoder)
    transformer: int = 0  # causal transformer layers at the bottleneck (after the LSTM, if any)
    context: int = 250  # transformer attention window in frames (10 s at 25 Hz)
    n_q: int = 8  # codebooks
    bins: int = 2048  # entries per codebook
    pad_mode: str = "constant"  # "constant" streams exactly; EnCodec's checkpoints use "reflect"
    causal: bool = True
    norm: str = "weight_norm"
    compress: int = 2
    true_skip: bool = False
    semantic_dim: int = 0  # > 0: a 1x1 conv head maps the first codebook to teacher features
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # free-form notes

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def kbps(self) -> float:
        return self.n_q * math.log2(self.bins) * self.frame_rate / 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        d = dict(d)
        d["ratios"] = tuple(d["ratios"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def encodec_24khz_config() -> CodecConfig:
    """The configuration of EnCodec's causal 24 kHz model (32 codebooks x 1024, reflect padding)."""
    return CodecConfig(sample_rate=24000, ratios=(8, 5, 4, 2), n_q=32, bins=1024, pad_mode="reflect")


class ParleyCodec(StreamingModule[State]):
    def __init__(self, cfg: CodecConfig = CodecConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.codec_id: str | None = None  # codec.io.codec_id of the weights `load_codec` read (tokens are tied to it)
        kw = dict(channels=cfg.channels, dimension=cfg.dimension, n_filters=cfg.n_filters,
                  n_residual_layers=cfg.n_residual_layers, ratios=cfg.ratios, norm=cfg.norm,
                  causal=cfg.causal, pad_mode=cfg.pad_mode, true_skip=cfg.true_skip,
                  compress=cfg.compress, lstm=cfg.lstm, transformer=cfg.transformer,
                  context=cfg.context)
        self.encoder = SEANetEncoder(**kw)  # type: ignore[arg-type]
        self.quantizer = ResidualVectorQuantizer(cfg.dimension, cfg.n_q, cfg.bins)
        self.decoder = SEANetDecoder(**kw)  # type: ignore[arg-type]
        # training-only head: first-level quantized latent -> semantic teacher features
        self.semantic = nn.Conv1d(cfg.dimension, cfg.semantic_dim, 1) if cfg.semantic_dim else None

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    def _as_3d(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 1:
            wav = wav[None, None]
        elif wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3 or wav.shape[1] != self.cfg.channels:
            raise ValueError(f"audio should be [B, {self.cfg.channels}, T], got {tuple(wav.shape)}")
        return wav

    def _pad_full(self, wav: torch.Tensor) -> torch.Tensor:
        if self.is_streaming:
            if wav.shape[-1] % self.hop_length:
                raise ValueError(f"streaming chunks must be a multiple of {self.hop_length} samples, "
                                 f"got {wav.shape[-1]}")
            return wav
        if self.cfg.pad_mode != "constant":  # EnCodec: each conv pads its own end (reflect)
            return wav
        # zeros at the end up to a whole frame: the same as a stream's last chunk zero-padded
        rem = (-wav.shape[-1]) % self.hop_length
        return F.pad(wav, (0, rem)) if rem else wav

    def encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, C, T) -> continuous latents (B, D, ceil(T / hop)) (zero-padded at the end)."""
        with _cpu_conv_flags(wav):
            return self.encoder(self._pad_full(self._as_3d(wav)))

    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """wav (B, T) or (B, 1, T) float in [-1, 1] at `sample_rate` -> codes (B, K, frames) int64."""
        return self.quantizer.encode(self.encode_latent(wav), n_q)

    def decode(self, codes: torch.Tensor, check_values: bool = True) -> torch.Tensor:
        """codes (B, K, frames) (K <= n_q: fewer levels = coarser) -> wav (B, 1, frames * hop).
        `check_values=False` skips the range check (a GPU sync; a CUDA graph cannot hold one)."""
        if codes.dim() != 3:
            raise ValueError(f"codes should be [B, K, T], got {tuple(codes.shape)}")
        if codes.shape[1] > self.cfg.n_q or codes.shape[1] < 1:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, model has {self.cfg.n_q}")
        if check_values and codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.bins):
            raise ValueError(f"code values must be in [0, {self.cfg.bins})")
        with _cpu_conv_flags(codes):
            return self.decoder(self.quantizer.decode(codes))

    def semantic_features(self, q: QuantizedResult) -> torch.Tensor:
        """Semantic head on the first level: (B, T, semantic_dim) (needs cfg.semantic_dim > 0)."""
        if self.semantic is None:
            raise ValueError("this codec has no semantic head (semantic_dim = 0)")
        return self.semantic(q.first.to(self.semantic.weight.dtype)).transpose(1, 2)

    def forward(self, wav: torch.Tensor, dropout_p: float = 0.0) -> tuple[torch.Tensor, QuantizedResult]:
        """Training pass: wav (B, 1, T) -> (reconstruction (B, 1, T'), quantizer result)."""
        q = self.quantizer(self.encode_latent(wav), dropout_p)
        return self.decoder(q.quantized.to(wav.dtype)), q
