"""SEANet encoder / decoder (EnCodec architecture), built from streaming layers.

Module tree and parameter names are those of `encodec.modules.seanet` (`model.N....`), so
EnCodec's `encodec_24khz` state dict loads into `SEANetEncoder(ratios=[8, 5, 4, 2])` etc.

Encoder (ratios reversed, e.g. Parley's [8, 8, 5, 4] -> strides 4, 5, 8, 8 = hop 1280):
  conv k7 (1 -> F) | [resblock(F), ELU, conv k=2r stride r (F -> 2F)] x len(ratios) | LSTM | ELU |
  conv k7 (2^n F -> dimension)
Decoder mirrors it with transposed convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from codec.conv import SConv1d, SConvTranspose1d
from codec.streaming import State, StreamingModule, StreamingSequential
from codec.transformer import CausalTransformer


@dataclass
class _LSTMState(State):
    h: torch.Tensor  # (B, num_layers, H)
    c: torch.Tensor  # (B, num_layers, H)


class SLSTM(StreamingModule[_LSTMState]):
    """LSTM over time in conv layout (B, C, T) with a skip connection; `.lstm` as in EnCodec."""

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def _init_streaming_state(self, batch_size: int) -> _LSTMState:
        L, H = self.lstm.num_layers, self.lstm.hidden_size
        dev = self.lstm.weight_hh_l0.device
        return _LSTMState(batch_size, torch.zeros(batch_size, L, H, device=dev),
                          torch.zeros(batch_size, L, H, device=dev))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # (T, B, C)
        st = self._streaming_state
        if st is None:
            y, _ = self.lstm(x)
        elif x.shape[0] == 0:
            y = x
        else:
            hc = (st.h.transpose(0, 1).contiguous().to(x.dtype), st.c.transpose(0, 1).contiguous().to(x.dtype))
            y, (h, c) = self.lstm(x, hc)
            st.h, st.c = h.transpose(0, 1).detach().float(), c.transpose(0, 1).detach().float()
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class SEANetResnetBlock(StreamingModule[State]):
    def __init__(self, dim: int, kernel_sizes: Sequence[int] = (3, 1), dilations: Sequence[int] = (1, 1),
                 norm: str = "weight_norm", causal: bool = True, pad_mode: str = "constant",
                 compress: int = 2, true_skip: bool = True) -> None:
        super().__init__()
        hidden = dim // compress
        block: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernel_sizes, dilations)):
            cin = dim if i == 0 else hidden
            cout = dim if i == len(kernel_sizes) - 1 else hidden
            block += [nn.ELU(alpha=1.0), SConv1d(cin, cout, k, dilation=d, norm=norm, causal=causal,
                                                 pad_mode=pad_mode)]
        self.block = StreamingSequential(*block)
        self.shortcut: nn.Module = (nn.Identity() if true_skip else
                                    SConv1d(dim, dim, 1, norm=norm, causal=causal, pad_mode=pad_mode))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SEANetEncoder(StreamingModule[State]):
    """(B, channels, T) audio -> (B, dimension, T / hop) latents."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), norm: str = "weight_norm",
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = True, pad_mode: str = "constant",
                 true_skip: bool = False, compress: int = 2, lstm: int = 2, transformer: int = 0,
                 context: int = 250) -> None:
        super().__init__()
        self.ratios = list(reversed(ratios))
        self.hop_length = int(torch.tensor(self.ratios).prod())
        kw = dict(norm=norm, causal=causal, pad_mode=pad_mode)
        mult = 1
        layers: list[nn.Module] = [SConv1d(channels, n_filters, kernel_size, **kw)]  # type: ignore[arg-type]
        for ratio in self.ratios:
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(mult * n_filters, (residual_kernel_size, 1),
                                                (dilation_base ** j, 1), compress=compress,
                                                true_skip=true_skip, **kw))  # type: ignore[arg-type]
            layers += [nn.ELU(alpha=1.0), SConv1d(mult * n_filters, mult * n_filters * 2, ratio * 2,
                                                  stride=ratio, **kw)]  # type: ignore[arg-type]
            mult *= 2
        if lstm:
            layers.append(SLSTM(mult * n_filters, num_layers=lstm))
        if transformer:
            layers.append(CausalTransformer(mult * n_filters, num_layers=transformer, context=context))
        layers += [nn.ELU(alpha=1.0), SConv1d(mult * n_filters, dimension, last_kernel_size, **kw)]  # type: ignore[arg-type]
        self.model = StreamingSequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SEANetDecoder(StreamingModule[State]):
    """(B, dimension, T) latents -> (B, channels, T * hop) audio."""

    def __init__(self, channels: int = 1, dimension: int = 128, n_filters: int = 32,
                 n_residual_layers: int = 1, ratios: Sequence[int] = (8, 5, 4, 2), norm: str = "weight_norm",
                 kernel_size: int = 7, last_kernel_size: int = 7, residual_kernel_size: int = 3,
                 dilation_base: int = 2, causal: bool = True, pad_mode: str = "constant",
                 true_skip: bool = False, compress: int = 2, lstm: int = 2, transformer: int = 0,
                 context: int = 250, trim_right_ratio: float = 1.0) -> None:
        super().__init__()
        self.ratios = list(ratios)
        self.hop_length = int(torch.tensor(self.ratios).prod())
        kw = dict(norm=norm, causal=causal, pad_mode=pad_mode)
        mult = 2 ** len(self.ratios)
        layers: list[nn.Module] = [SConv1d(dimension, mult * n_filters, kernel_size, **kw)]  # type: ignore[arg-type]
        if lstm:
            layers.append(SLSTM(mult * n_filters, num_layers=lstm))
        if transformer:
            layers.append(CausalTransformer(mult * n_filters, num_layers=transformer, context=context))
        for ratio in self.ratios:
            layers += [nn.ELU(alpha=1.0),
                       SConvTranspose1d(mult * n_filters, mult * n_filters // 2, ratio * 2, stride=ratio,
                                        norm=norm, causal=causal, trim_right_ratio=trim_right_ratio)]
            for j in range(n_residual_layers):
                layers.append(SEANetResnetBlock(mult * n_filters // 2, (residual_kernel_size, 1),
                                                (dilation_base ** j, 1), compress=compress,
                                                true_skip=true_skip, **kw))  # type: ignore[arg-type]
            mult //= 2
        layers += [nn.ELU(alpha=1.0), SConv1d(n_filters, channels, last_kernel_size, **kw)]  # type: ignore[arg-type]
        self.model = StreamingSequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)
