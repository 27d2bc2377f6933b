"""Causal streaming convolutions with EnCodec's parameter layout.

Names match `encodec.modules.conv` so an EnCodec state dict loads unchanged:
`SConv1d.conv.conv.{weight_g,weight_v,bias}` and `SConvTranspose1d.convtr.convtr.{...}`
(weight norm as in `torch.nn.utils.weight_norm`, dim=0).

Streaming (causal only):
- SConv1d keeps the last `K_eff - stride` input samples (`previous`); each call convolves
  [previous, x] so the output equals the full pass with `K_eff - stride` zeros padded on the left.
  Chunks must be a multiple of the stride.
- SConvTranspose1d keeps the `K - stride` output samples that the current frames spill into the
  future (`partial`, bias removed) and adds them to the next call's first samples; in a full pass
  these are the samples trimmed on the right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.streaming import State, StreamingModule


def _wn_weight(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Weight norm along dim 0: w = g * v / ||v|| (norm over all other dims)."""
    norm = v.norm(2, dim=tuple(range(1, v.dim())), keepdim=True)
    return v * (g / norm)


class _WeightNormMixin:
    """Replaces `weight` by `weight_g` (out, 1, 1) and `weight_v`; caches w in eval mode."""

    def _setup_weight_norm(self) -> None:
        w = self.weight  # type: ignore[attr-defined]
        del self._parameters["weight"]  # type: ignore[attr-defined]
        g = w.norm(2, dim=tuple(range(1, w.dim())), keepdim=True)
        self.weight_g = nn.Parameter(g.detach().clone())
        self.weight_v = nn.Parameter(w.detach().clone())
        self._cached: torch.Tensor | None = None
        self._cached_key: tuple = ()

    def _weight(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():  # type: ignore[attr-defined]
            self._cached = None
            return _wn_weight(self.weight_g, self.weight_v)
        g, v = self.weight_g, self.weight_v
        key = (v.data_ptr(), v._version, g.data_ptr(), g._version, v.dtype)
        if self._cached is None or self._cached_key != key:
            self._cached, self._cached_key = _wn_weight(g, v), key
        return self._cached

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._cached = None
        return super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]


class WNConv1d(_WeightNormMixin, nn.Conv1d):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._setup_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self._weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class WNConvTranspose1d(_WeightNormMixin, nn.ConvTranspose1d):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        nn.ConvTranspose1d.__init__(self, *args, **kwargs)
        self._setup_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.conv_transpose1d(x, self._weight(), self.bias, self.stride)


class NormConv1d(nn.Module):
    """Holds the conv as `.conv` (EnCodec layout); weight norm or none."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, norm: str = "weight_norm") -> None:
        super().__init__()
        cls = WNConv1d if norm == "weight_norm" else nn.Conv1d
        if norm not in ("weight_norm", "none"):
            raise ValueError(f"unsupported norm {norm!r} (weight_norm or none)")
        self.conv = cls(cin, cout, kernel_size, stride, dilation=dilation, groups=groups, bias=bias)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NormConvTranspose1d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1,
                 norm: str = "weight_norm") -> None:
        super().__init__()
        cls = WNConvTranspose1d if norm == "weight_norm" else nn.ConvTranspose1d
        self.convtr = cls(cin, cout, kernel_size, stride)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convtr(x)


@dataclass
class _ConvState(State):
    previous: torch.Tensor  # (B, C_in, K_eff - stride) last input samples


def _extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
    """Right padding so that the last window is full (as EnCodec's get_extra_padding_for_conv1d)."""
    n_frames = (length - kernel + padding_total) / stride + 1
    ideal = (math.ceil(n_frames) - 1) * stride + (kernel - padding_total)
    return ideal - length


class SConv1d(StreamingModule[_ConvState]):
    """Conv1d with causal (left) padding; pad_mode 'constant' streams exactly, 'reflect' is EnCodec's
    full-pass padding (streaming then uses zeros on the first chunk: not exact for the first samples)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True, causal: bool = True,
                 norm: str = "weight_norm", pad_mode: str = "constant") -> None:
        super().__init__()
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, stride, dilation, groups, bias, norm)
        self.causal, self.pad_mode = causal, pad_mode
        self.kernel_eff = (kernel_size - 1) * dilation + 1
        self.stride = stride
        self.padding_total = self.kernel_eff - stride

    def _init_streaming_state(self, batch_size: int) -> _ConvState:
        c = self.conv.conv
        return _ConvState(batch_size, torch.zeros(batch_size, c.in_channels, self.padding_total,
                                                  device=c.bias.device if c.bias is not None else None,
                                                  dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, T) -> (B, C_out, T // stride)
        st = self._streaming_state
        if st is None:
            extra = _extra_padding(x.shape[-1], self.kernel_eff, self.stride, self.padding_total)
            if self.causal:
                pads = (self.padding_total, extra)
            else:
                right = self.padding_total // 2
                pads = (self.padding_total - right, right + extra)
            return self.conv(_pad1d(x, pads, self.pad_mode))
        if not self.causal:
            raise RuntimeError("only causal convolutions can stream")
        if x.shape[-1] % self.stride:
            raise ValueError(f"streaming chunk of {x.shape[-1]} steps is not a multiple of stride {self.stride}")
        xx = torch.cat([st.previous.to(x.dtype), x], dim=-1)
        if self.padding_total:
            st.previous = xx[..., xx.shape[-1] - self.padding_total :].detach().float()
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.conv.conv.out_channels, 0)
        return self.conv(xx)


def _pad1d(x: torch.Tensor, pads: tuple[int, int], mode: str) -> torch.Tensor:
    if mode != "reflect":
        return F.pad(x, pads, mode, 0.0)
    # EnCodec's pad1d: reflect needs length > pad, so add zeros on the right first if short.
    max_pad = max(pads)
    extra = max_pad - x.shape[-1] + 1 if x.shape[-1] <= max_pad else 0
    if extra:
        x = F.pad(x, (0, extra))
    y = F.pad(x, pads, "reflect")
    return y[..., : y.shape[-1] - extra]


@dataclass
class _ConvTrState(State):
    partial: torch.Tensor  # (B, C_out, K - stride) overlap-add tail without bias


class SConvTranspose1d(StreamingModule[_ConvTrState]):
    """Causal transposed conv: output of T frames is T * stride samples (trim_right_ratio = 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 causal: bool = True, norm: str = "weight_norm", trim_right_ratio: float = 1.0) -> None:
        super().__init__()
        if causal and trim_right_ratio != 1.0:
            raise ValueError("only trim_right_ratio=1.0 is supported")
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, stride, norm)
        self.causal, self.stride, self.kernel = causal, stride, kernel_size
        self.padding_total = kernel_size - stride

    def _init_streaming_state(self, batch_size: int) -> _ConvTrState:
        c = self.convtr.convtr
        return _ConvTrState(batch_size, torch.zeros(batch_size, c.out_channels, self.padding_total,
                                                    device=c.bias.device, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, T) -> (B, C_out, T * stride)
        y = self.convtr(x)  # (B, C_out, (T - 1) * stride + K)
        st = self._streaming_state
        if st is None:
            if self.causal:
                return y[..., : y.shape[-1] - self.padding_total]
            right = self.padding_total // 2
            return y[..., self.padding_total - right : y.shape[-1] - right]
        if not self.causal:
            raise RuntimeError("only causal convolutions can stream")
        if x.shape[-1] == 0:
            return y[..., :0]
        pt = self.padding_total
        y = torch.cat([y[..., :pt] + st.partial.to(y.dtype), y[..., pt:]], dim=-1)
        out, tail = y[..., : y.shape[-1] - pt], y[..., y.shape[-1] - pt :]
        bias = self.convtr.convtr.bias
        st.partial = (tail - bias.view(1, -1, 1).to(tail.dtype) if bias is not None else tail).detach().float()
        return out
