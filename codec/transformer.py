"""A small causal transformer for the codec's bottleneck (Mimi puts one on each side of its
quantizer), streaming with a sliding-window KV cache.

Each layer: x + ls1 * attn(norm(x)); x + ls2 * ffn(norm(x)), RoPE on queries and keys with
absolute positions, attention limited to the last `context` frames (also in the full pass, so
streamed and full outputs agree). Layout (B, C, T) like the convolutions around it.

Streaming state per layer (all rows independent, `reset(mask)` restarts rows):
  k, v    (B, H, L, hs)   the last L = context keys / values
  valid   (B, L)          1 where a cached slot holds a key (0 after reset)
  kpos    (B, L)          absolute position of each cached key
  offset  (B,)            absolute position of the next frame
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.streaming import State, StreamingModule, StreamingSequential


def _rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (B, H, T, hs), pos (B, T) absolute positions -> rotated x (pairs (i, i + hs/2))."""
    hs = x.shape[-1]
    inv = base ** (-torch.arange(0, hs // 2, device=x.device, dtype=torch.float32) / (hs // 2))
    ang = pos.float()[:, None, :, None] * inv  # (B, 1, T, hs/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


@dataclass
class _KVState(State):
    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor
    kpos: torch.Tensor
    offset: torch.Tensor


class _Layer(StreamingModule[_KVState]):
    def __init__(self, d: int, n_head: int, context: int, ffn_mult: int = 4, layer_scale: float = 0.01) -> None:
        super().__init__()
        self.n_head, self.context = n_head, context
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d, bias=False), nn.GELU(),
                                 nn.Linear(ffn_mult * d, d, bias=False))
        self.ls1 = nn.Parameter(torch.full((d,), layer_scale))
        self.ls2 = nn.Parameter(torch.full((d,), layer_scale))

    def _init_streaming_state(self, batch_size: int) -> _KVState:
        d = self.qkv.in_features
        hs, L, dev = d // self.n_head, self.context, self.qkv.weight.device
        z = torch.zeros(batch_size, self.n_head, L, hs, device=dev)
        return _KVState(batch_size, z, z.clone(), torch.zeros(batch_size, L, device=dev),
                        torch.zeros(batch_size, L, dtype=torch.long, device=dev),
                        torch.zeros(batch_size, dtype=torch.long, device=dev))

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        st = self._streaming_state
        start = st.offset if st is not None else torch.zeros(B, dtype=torch.long, device=h.device)
        qpos = start[:, None] + torch.arange(T, device=h.device)  # (B, T)
        q, k = _rope(q, qpos), _rope(k, qpos)
        kpos, valid = qpos, torch.ones(B, T, device=h.device)
        if st is not None:
            k = torch.cat([st.k.to(k.dtype), k], dim=2)
            v = torch.cat([st.v.to(v.dtype), v], dim=2)
            kpos = torch.cat([st.kpos, qpos], dim=1)
            valid = torch.cat([st.valid, valid], dim=1)
            L = self.context
            st.k, st.v = k[:, :, -L:].detach().float(), v[:, :, -L:].detach().float()
            st.kpos, st.valid, st.offset = kpos[:, -L:], valid[:, -L:], start + T
        rel = qpos[:, :, None] - kpos[:, None, :]  # (B, T, S)
        allowed = (rel >= 0) & (rel < self.context) & (valid[:, None, :] > 0)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])  # (B, H, T, hs)
        return self.out(a.transpose(1, 2).reshape(B, T, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D)."""
        if x.shape[1] == 0:
            return x
        x = x + self.ls1.to(x.dtype) * self._attend(self.norm1(x))
        return x + self.ls2.to(x.dtype) * self.ffn(self.norm2(x))


class CausalTransformer(StreamingModule[State]):
    """(B, C, T) -> (B, C, T): `num_layers` causal pre-norm residual layers."""

    def __init__(self, dim: int, num_layers: int = 2, n_head: int = 8, context: int = 250) -> None:
        super().__init__()
        self.layers = StreamingSequential(*[_Layer(dim, n_head, context) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.transpose(1, 2)).transpose(1, 2)
