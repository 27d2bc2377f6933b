"""Depth transformer: writes the K codebooks of one agent frame, one after the other (Moshi).

For each temporal step it reads the temporal transformer's hidden state h (d_model) and the
text token just written, and runs a small causal transformer over K positions:

    x_0 = P_0 h + T(text)          -> logits of codebook 0
    x_k = P_k h + E_{k-1}(a_{k-1}) -> logits of codebook k      (k = 1 .. K-1)

P_k: one projection per position (Moshi's multi-linear), T: the frozen text embedding of the
backbone projected down, E_k: codebook embeddings (INIT included), tied with the output head of
codebook k (which keeps the checkpoint small). Training runs all K positions
at once (teacher forcing); generation re-runs the short prefix for each codebook (K <= 8 so the
quadratic cost is nothing next to the temporal step, and every shape stays static for CUDA graphs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.llama import RMSNorm


@dataclass(frozen=True)
class DepthConfig:
    dim: int = 256  # width of the depth transformer
    n_layers: int = 3
    n_heads: int = 4
    ffn_dim: int = 768  # SwiGLU hidden size
    norm_eps: float = 1e-5


class DepthBlock(nn.Module):
    def __init__(self, cfg: DepthConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, S, D), causal over S
        N, S, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(N, S, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (N, H, S, hd)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(N, S, D))
        g, u = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class DepthTransformer(nn.Module):
    def __init__(self, cfg: DepthConfig, d_model: int, text_dim: int, n_q: int, card: int) -> None:
        super().__init__()
        self.cfg, self.n_q, self.card = cfg, n_q, card
        self.in_proj = nn.Parameter(torch.randn(n_q, cfg.dim, d_model) * d_model**-0.5)  # P_k
        self.text_proj = nn.Linear(text_dim, cfg.dim, bias=False)
        self.code_emb = nn.ModuleList(nn.Embedding(card + 1, cfg.dim) for _ in range(n_q - 1))  # E_k
        self.pos = nn.Parameter(torch.zeros(n_q, cfg.dim))
        self.blocks = nn.ModuleList(DepthBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # output head k is tied to the input embedding E_k of the same codebook (rows < card);
        # the last codebook is never an input, so it has its own head
        self.last_head = nn.Parameter(torch.randn(card, cfg.dim) * cfg.dim**-0.5)
        for e in self.code_emb:
            nn.init.normal_(e.weight, std=cfg.dim**-0.5)

    @property
    def heads(self) -> torch.Tensor:  # (K, card, dim)
        return torch.stack([e.weight[: self.card] for e in self.code_emb] + [self.last_head])

    def head(self, k: int) -> torch.Tensor:  # (card, dim)
        return self.last_head if k == self.n_q - 1 else self.code_emb[k].weight[: self.card]

    def inputs(self, h: torch.Tensor, text_emb: torch.Tensor, codes: torch.Tensor, n: int) -> torch.Tensor:
        """h: (N, d_model), text_emb: (N, text_dim), codes: (N, >= n-1) -> x: (N, n, dim)."""
        x = torch.einsum("nd,kcd->nkc", h, self.in_proj[:n].to(h.dtype))  # (N, n, dim)
        first = self.text_proj(text_emb.to(h.dtype)).unsqueeze(1)  # (N, 1, dim)
        rest = [self.code_emb[k](codes[:, k]).unsqueeze(1) for k in range(n - 1)]
        return x + torch.cat([first, *rest], dim=1).to(h.dtype) + self.pos[:n].to(h.dtype)

    def forward(self, h: torch.Tensor, text_emb: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing. h: (N, d_model), text_emb: (N, text_dim), codes: (N, K) -> (N, K, card)."""
        x = self.inputs(h, text_emb, codes, self.n_q)
        for blk in self.blocks:
            x = blk(x)
        return torch.einsum("nkc,kvc->nkv", self.norm(x), self.heads.to(x.dtype))

    def logits_at(self, h: torch.Tensor, text_emb: torch.Tensor, codes: torch.Tensor, k: int) -> torch.Tensor:
        """Generation: logits of codebook k given codebooks < k in codes[:, :k] -> (N, card)."""
        x = self.inputs(h, text_emb, codes, k + 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, k]) @ self.head(k).to(x.dtype).t()


class ParallelHeads(nn.Module):
    """The delay-pattern alternative (MusicGen-style): codebook k of the delayed column read
    straight off h_t by its own head, no depth transformer. Same interface as DepthTransformer
    (``codes`` are ignored: the codebooks of one step are predicted independently, which is why
    the layout must delay codebook k by k steps so that it sees codebooks < k of its frame)."""

    def __init__(self, cfg: DepthConfig, d_model: int, text_dim: int, n_q: int, card: int) -> None:
        super().__init__()
        self.n_q, self.card = n_q, card
        self.proj = nn.Linear(d_model, cfg.dim, bias=False)
        self.text_proj = nn.Linear(text_dim, cfg.dim, bias=False)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.heads = nn.Parameter(torch.randn(n_q, card, cfg.dim) * cfg.dim**-0.5)

    def _x(self, h: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(h) + self.text_proj(text_emb.to(h.dtype)))  # (N, dim)

    def forward(self, h: torch.Tensor, text_emb: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nc,kvc->nkv", self._x(h, text_emb), self.heads.to(h.dtype))

    def logits_at(self, h: torch.Tensor, text_emb: torch.Tensor, codes: torch.Tensor, k: int) -> torch.Tensor:
        return self._x(h, text_emb) @ self.heads[k].to(h.dtype).t()
