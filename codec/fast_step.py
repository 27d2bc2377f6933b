"""One streaming step of a codec half as a pure function of explicit state (`StepNet`).

    encoder  StepNet(audio (B, 1, T*hop), *states) -> (codes (B, K, T), *new_states)   RVQ included
    decoder  StepNet(latent (B, D, T), *states)    -> (audio (B, 1, T*hop), *new_states)

Built from a trained `ParleyCodec` (weight norm folded into plain weights). Inside, activations
are laid out (B, C, 1, T): ONNX Runtime runs 2D convolutions with its blocked (NCHWc) kernels,
which measured faster than its 1D ones here. States, in order of the layers (`state_shapes`,
without the batch):
  conv             previous inputs      (C_in, 1, K_eff - stride)   (k = 1 convs have none)
  transposed conv  overlap-add tail     (C_out, 1, K - stride), bias removed
  LSTM             h, c                 (layers, H) each
  transformer      per layer k, v (H, L, hs), valid (L,), kpos (L,) int64, offset () int64
                   (the sliding-window KV cache of `codec/transformer.py`; `state_dtypes`)
The same graph runs eagerly in torch, and `torch.onnx` exports it (`codec/fast.py`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from codec.conv import SConv1d, SConvTranspose1d
from codec.seanet import SEANetResnetBlock, SLSTM
from codec.streaming import StreamingSequential
from codec.transformer import CausalTransformer, _Layer, _rope

States = list[torch.Tensor]


def state_dtypes(m: nn.Module) -> list[torch.dtype]:
    """The dtype of each of a step module's states (float32 unless it says otherwise)."""
    return list(getattr(m, "state_dtypes", [torch.float32] * len(m.state_shapes)))


def _plain_weight(conv: nn.Module) -> torch.Tensor:
    """The conv's effective weight (weight norm folded), float32, detached."""
    w = conv._weight() if hasattr(conv, "weight_g") else conv.weight
    return w.detach().float().clone()


class _Conv(nn.Module):
    """Causal conv: x (B, C_in, 1, T) + previous (B, C_in, 1, P) -> (B, C_out, 1, T // stride)."""

    def __init__(self, m: SConv1d) -> None:
        super().__init__()
        c = m.conv.conv
        self.register_buffer("w", _plain_weight(c)[:, :, None])  # (C_out, C_in, 1, K)
        self.register_buffer("b", c.bias.detach().float().clone() if c.bias is not None else None)
        self.stride, self.dilation, self.pad = m.stride, c.dilation[0], m.padding_total
        self.state_shapes = [(c.in_channels, 1, self.pad)] if self.pad else []

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        new: States = []
        if self.pad:
            x = torch.cat([st[0], x], dim=-1)  # (B, C_in, 1, P + T)
            new = [x[..., -self.pad :]]
        return F.conv2d(x, self.w, self.b, (1, self.stride), 0, (1, self.dilation)), new


class _ConvTr(nn.Module):
    """Causal transposed conv: x (B, C_in, 1, T) + tail (B, C_out, 1, K - s) -> (B, C_out, 1, T * s).

    (As one matmul + overlap-add it measured the same as ONNX Runtime's ConvTranspose here.)
    """

    def __init__(self, m: SConvTranspose1d) -> None:
        super().__init__()
        c = m.convtr.convtr
        self.register_buffer("w", _plain_weight(c)[:, :, None])  # (C_in, C_out, 1, K)
        self.register_buffer("b", c.bias.detach().float().clone())
        self.stride, self.pt = m.stride, m.padding_total
        self.state_shapes = [(c.out_channels, 1, self.pt)]

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        y = F.conv_transpose2d(x, self.w, self.b, (1, self.stride))  # (B, C_out, 1, (T + 1) * s)
        y = torch.cat([y[..., : self.pt] + st[0], y[..., self.pt :]], dim=-1)
        return y[..., : -self.pt], [y[..., -self.pt :] - self.b.view(1, -1, 1, 1)]


class _LSTM(nn.Module):
    """LSTM with skip: x (B, C, 1, T), h, c (B, L, H) -> (B, C, 1, T)."""

    def __init__(self, m: SLSTM) -> None:
        super().__init__()
        self.lstm = nn.LSTM(m.lstm.input_size, m.lstm.hidden_size, m.lstm.num_layers)
        self.lstm.load_state_dict(m.lstm.state_dict())
        self.skip = m.skip
        self.state_shapes = [(m.lstm.num_layers, m.lstm.hidden_size)] * 2

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        xt = x[:, :, 0].permute(2, 0, 1)  # (T, B, C)
        y, (h, c) = self.lstm(xt, (st[0].transpose(0, 1).contiguous(), st[1].transpose(0, 1).contiguous()))
        if self.skip:
            y = y + xt
        return y.permute(1, 2, 0)[:, :, None], [h.transpose(0, 1), c.transpose(0, 1)]


class _Attn(nn.Module):
    """One causal transformer layer (`codec/transformer.py`) with its sliding-window KV cache as
    explicit state: k, v (B, H, L, hs), valid (B, L), kpos (B, L) int64, offset (B,) int64."""

    def __init__(self, m: _Layer) -> None:
        super().__init__()
        self.layer = m  # its parameters; the streaming logic is below
        d, self.n_head, self.context = m.qkv.in_features, m.n_head, m.context
        hs = d // m.n_head
        self.state_shapes = [(m.n_head, m.context, hs), (m.n_head, m.context, hs), (m.context,), (m.context,), ()]
        self.state_dtypes = [torch.float32, torch.float32, torch.float32, torch.int64, torch.int64]

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        """x (B, T, D) -> (B, T, D), the same arithmetic as `_Layer._attend` in streaming."""
        m, (k0, v0, valid0, kpos0, start) = self.layer, st
        B, T, D = x.shape
        h = m.norm1(x)
        q, k, v = m.qkv(h).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        qpos = start[:, None] + torch.arange(T, device=x.device)  # (B, T)
        q, k = _rope(q, qpos), _rope(k, qpos)
        k, v = torch.cat([k0, k], dim=2), torch.cat([v0, v], dim=2)  # (B, H, L + T, hs)
        kpos = torch.cat([kpos0, qpos], dim=1)
        valid = torch.cat([valid0, torch.ones_like(qpos, dtype=valid0.dtype)], dim=1)
        L = self.context
        new = [k[:, :, -L:], v[:, :, -L:], valid[:, -L:], kpos[:, -L:], start + T]
        rel = qpos[:, :, None] - kpos[:, None, :]  # (B, T, L + T)
        allowed = (rel >= 0) & (rel < L) & (valid[:, None, :] > 0)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])  # (B, H, T, hs)
        x = x + m.ls1 * m.out(a.transpose(1, 2).reshape(B, T, D))
        return x + m.ls2 * m.ffn(m.norm2(x)), new


class _Transformer(nn.Module):
    """CausalTransformer: x (B, C, 1, T) -> (B, C, 1, T) through its layers."""

    def __init__(self, m: CausalTransformer) -> None:
        super().__init__()
        self.layers = _Seq([_Attn(layer) for layer in m.layers])
        self.state_shapes, self.state_dtypes = self.layers.state_shapes, self.layers.state_dtypes

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        y, new = self.layers(x[:, :, 0].transpose(1, 2), st)
        return y.transpose(1, 2)[:, :, None], new


ELU_SPLIT_MIN = 2048  # elements per row from which the ONNX graph computes ELU in 4 vector ops


class _ELU(nn.Module):
    state_shapes: list = []

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        if torch.onnx.is_in_onnx_export() and x.shape[1] * x.shape[-1] >= ELU_SPLIT_MIN:
            # relu(x) + exp(min(x, 0)) - 1: ONNX Runtime's Elu kernel is 2.2x slower on a (32, 642)
            # row (35 vs 16 us); differs from expm1 by <= 3e-7. Decided per layer at export.
            return torch.relu(x) + (torch.exp(torch.clamp(x, max=0.0)) - 1.0), []
        return F.elu(x), []


class _Seq(nn.Module):
    """Steps in sequence; their states concatenated in order."""

    def __init__(self, steps: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.state_shapes = [s for m in self.steps for s in m.state_shapes]
        self.state_dtypes = [d for m in self.steps for d in state_dtypes(m)]

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        out: States = []
        i = 0
        for m in self.steps:
            n = len(m.state_shapes)
            x, new = m(x, st[i : i + n])
            out += new
            i += n
        return x, out


class _Res(nn.Module):
    """SEANet residual block: shortcut(x) + block(x) (the torch path's order of addition)."""

    def __init__(self, m: SEANetResnetBlock) -> None:
        super().__init__()
        self.block = _convert(m.block)
        self.shortcut = None if isinstance(m.shortcut, nn.Identity) else _convert(m.shortcut)
        self.n_sc = len(self.shortcut.state_shapes) if self.shortcut is not None else 0
        self.state_shapes = (self.shortcut.state_shapes if self.shortcut is not None else []) + self.block.state_shapes
        self.state_dtypes = (state_dtypes(self.shortcut) if self.shortcut is not None else []) + state_dtypes(self.block)

    def forward(self, x: torch.Tensor, st: States) -> tuple[torch.Tensor, States]:
        s, new_s = self.shortcut(x, st[: self.n_sc]) if self.shortcut is not None else (x, [])
        y, new_b = self.block(x, st[self.n_sc :])
        return s + y, new_s + new_b


def _convert(m: nn.Module) -> nn.Module:
    """A streaming layer of the torch codec -> its step module (ValueError if there is none)."""
    if isinstance(m, StreamingSequential):
        return _Seq([_convert(c) for c in m])
    if isinstance(m, (SConv1d, SConvTranspose1d)) and not m.causal:
        raise ValueError("only causal convolutions stream")
    if isinstance(m, SConv1d) and m.pad_mode != "constant":
        raise ValueError("only zero padding streams exactly")
    for cls, step in ((SConv1d, _Conv), (SConvTranspose1d, _ConvTr), (SLSTM, _LSTM), (SEANetResnetBlock, _Res),
                      (CausalTransformer, _Transformer)):
        if isinstance(m, cls):
            return step(m)
    if isinstance(m, nn.ELU) and m.alpha == 1.0:
        return _ELU()
    raise ValueError(f"no fast streaming step for {type(m).__name__}")


class StepNet(nn.Module):
    """One streaming step of the encoder (with RVQ when `embeds` (K, N, D) is given) or decoder."""

    def __init__(self, seq: nn.Module, embeds: torch.Tensor | None = None) -> None:
        super().__init__()
        self.seq = _convert(seq)
        self.state_shapes: list[tuple[int, ...]] = list(self.seq.state_shapes)
        self.state_dtypes: list[torch.dtype] = state_dtypes(self.seq)
        self.register_buffer("embeds", embeds.detach().float().clone() if embeds is not None else None)
        self.register_buffer("embeds_sq", embeds.detach().float().pow(2).sum(-1) if embeds is not None else None)

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, C, T) and the states -> (y, *new_states); y: codes (B, K, T) or audio (B, 1, T')."""
        y, new = self.seq(x[:, :, None], list(states))
        y = y[:, :, 0]
        return (self._quantize(y) if self.embeds is not None else y, *new)

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, T) -> codes (B, K, T): residual VQ with the torch path's distance formula."""
        D = z.shape[1]
        residual = z.transpose(1, 2).reshape(-1, D)  # (B*T, D)
        codes = []
        for k in range(self.embeds.shape[0]):
            e = self.embeds[k]  # (N, D)
            d = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ e.t() + self.embeds_sq[k][None]
            c = d.argmin(-1)  # (B*T,)
            residual = residual - F.embedding(c, e)
            codes.append(c)
        return torch.stack(codes, 1).view(z.shape[0], -1, len(codes)).transpose(1, 2)


def supports_step(seq: nn.Module) -> bool:
    try:
        _convert(seq)
    except ValueError:
        return False
    return True
