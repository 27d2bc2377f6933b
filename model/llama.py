"""The project's one transformer: a Llama-style decoder with a static KV cache.

Written to be read in one sitting (after nanoGPT): RMSNorm, rotary position embeddings (RoPE),
grouped-query attention (GQA) through ``F.scaled_dot_product_attention`` (cached calls on CPU:
fp32 matmuls, ``cpu_attention``, faster there), SwiGLU feed-forward,
optional tied input/output embeddings. Parameter names follow Meta's reference code
(``tok_embeddings``, ``layers.i.attention.wq``, ``feed_forward.w1``, ``output``), so adapters can
target ``wq wk wv wo w1 w2 w3`` by name.

RoPE convention: HF-style "rotate_half" (the first and second halves of each head are the pairs).
GGUF files store Q/K in llama.cpp's interleaved (Meta) layout; ``model/gguf.py`` un-permutes them
at load time, so this module has a single RoPE code path.

Streaming: every forward takes per-row ``positions`` (B, T). With a cache (``setup_cache`` then
``use_cache=True``, or an explicit ``cache=KVCache(...)``), the new keys/values are written at slot
= position of each row, and a row attends to the slots that are (a) valid for its current stream
(written since its last ``reset_rows``) and (b) at a position <= the query's. Rows of one batch can
therefore be at different positions (sessions that joined at different times) and be reset
independently. All cache updates are in-place tensor ops with static shapes, so a decode step can
be captured in a CUDA graph (then the whole cache length is attended; in eager mode only the
prefix up to the largest position). Positions must stay below the cache length (eager calls
check, a captured graph cannot), unless the cache is a ring (``ring=True``): then slot =
position % length and every query attends to the last ``length`` positions (sliding window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 49152
    dim: int = 576  # d_model
    n_layers: int = 30
    n_heads: int = 9  # query heads
    n_kv_heads: int = 3  # key/value heads (GQA: n_heads % n_kv_heads == 0)
    ffn_dim: int = 1536  # SwiGLU hidden width
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048  # largest position (RoPE, default cache length)
    tie_embeddings: bool = True  # output head shares the token embedding matrix

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"bad head layout: dim {self.dim}, heads {self.n_heads}, kv heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")


class KVCache(nn.Module):
    """Static per-layer key/value cache with the position held in every slot.

    k, v: (n_layers, B, n_kv, T_max, hd); slot_pos: (B, T_max) long, the position whose keys a slot
    holds (-1: empty for this row's stream). Without ``ring`` slot = position and positions must
    stay below T_max. With ``ring`` (after moshi's RingKVCache) slot = position % T_max: a
    stream goes on forever and each query attends to the last T_max positions (sliding window);
    the positions keep growing, so RoPE stays right. Every update is an in-place op of fixed
    shape (CUDA-graph safe, no host sync). Buffers are non-persistent (never in a state dict).
    ``static``: always attend over the whole T_max (as inside a CUDA graph) instead of the prefix
    up to the largest position (eager default; one host sync per forward).
    """

    def __init__(self, cfg: LlamaConfig, batch_size: int, max_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 static: bool = False, ring: bool = False) -> None:
        super().__init__()
        self.static, self.ring = static, ring
        shape = (cfg.n_layers, batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("slot_pos", torch.full((batch_size, max_len), -1, device=device, dtype=torch.long),
                             persistent=False)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def narrow(self, start: int, length: int) -> "KVCache":
        """Rows [start, start + length) as a cache that shares this one's storage (no copy):
        a forward on the view reads and writes those rows only (continuous batching)."""
        view = KVCache.__new__(KVCache)
        nn.Module.__init__(view)
        view.static, view.ring = self.static, self.ring
        for name in ("k", "v"):
            view.register_buffer(name, getattr(self, name).narrow(1, start, length), persistent=False)
        view.register_buffer("slot_pos", self.slot_pos.narrow(0, start, length), persistent=False)
        return view

    @property
    def valid(self) -> torch.Tensor:
        """(B, T_max) bool: slots holding this stream's keys/values."""
        return self.slot_pos >= 0

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Forget the past of some rows (a bool mask (B,) or row indices); all rows when None."""
        if rows is None:
            self.slot_pos.fill_(-1)
            return
        rows = torch.as_tensor(rows, device=self.slot_pos.device)
        if rows.dtype == torch.bool:
            self.slot_pos.masked_fill_(rows[:, None], -1)  # graph-safe (no host sync)
        else:
            self.slot_pos.index_fill_(0, rows.long(), -1)

    @torch.no_grad()
    def truncate(self, n: int) -> None:
        """Forget positions >= n in every row (a conversation that changed after its first n tokens)."""
        self.slot_pos.masked_fill_(self.slot_pos >= n, -1)

    def slots(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, T) -> cache slots (B, T)."""
        return positions % self.max_len if self.ring else positions

    def mark(self, positions: torch.Tensor) -> None:
        """Slots of ``positions`` (B, T) now hold this stream's keys/values."""
        self.slot_pos.scatter_(1, self.slots(positions), positions)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> None:
        """k, v: (B, n_kv, T, hd) written at the slots of ``positions`` (B, T) of ``layer``."""
        B, H, T, D = k.shape
        if not k.is_cuda:  # on CPU a 16-bit scatter_ copies the whole layer (95 us at 2048 slots), index_put_: 7 us
            rows, slots = torch.arange(B, device=k.device)[:, None].expand(B, T), self.slots(positions)
            self.k[layer].permute(0, 2, 1, 3).index_put_((rows, slots), k.transpose(1, 2).to(self.k.dtype))
            self.v[layer].permute(0, 2, 1, 3).index_put_((rows, slots), v.transpose(1, 2).to(self.v.dtype))
            return
        idx = self.slots(positions)[:, None, :, None].expand(B, H, T, D)
        self.k[layer].scatter_(2, idx, k.to(self.k.dtype))
        self.v[layer].scatter_(2, idx, v.to(self.v.dtype))

    def attn_mask(self, positions: torch.Tensor, length: int) -> torch.Tensor:
        """Queries at ``positions`` (B, T) -> bool mask (B, 1, T, length) over the first ``length``
        slots: written for this stream, not in the future, within the last T_max positions."""
        sp = self.slot_pos[:, None, :length]  # (B, 1, L)
        q = positions[:, :, None]  # (B, T, 1)
        return ((sp >= 0) & (sp <= q) & (sp > q - self.max_len))[:, None]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # normalize in fp32 whatever the compute dtype
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) -> cos, sin (B, 1, T, hd), computed in fp32 (exact at large positions)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, h, T, hd): rotate pairs (i, i + hd/2) by the angle of each position."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked GQA attention in fp32 for cached calls on CPU.

    q (B, nh, T, hd), k/v (B, nkv, L, hd), mask (B, 1, T, L) -> (B, nh, T, hd) in q's dtype.
    On CPU, SDPA's fp16/bf16 kernels cost ~190 us (L=48) to ~1.7 ms (L=512) per call for one
    query, fp32 matmuls ~25-250 us: ~30 layers x that per decoded token.
    """
    B, nh, T, hd = q.shape
    nkv = k.shape[1]
    g = nh // nkv  # query heads per kv head
    qg = q.float().reshape(B, nkv, g * T, hd)  # heads of one group share k, v
    att = (qg @ k.float().transpose(-1, -2)) * hd**-0.5  # (B, nkv, g*T, L)
    att = att.view(B, nkv, g, T, -1).masked_fill(~mask[:, :, None], float("-inf")).softmax(-1)
    y = att.view(B, nkv, g * T, -1) @ v.float()  # (B, nkv, g*T, hd)
    return y.view(B, nh, T, hd).to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hd = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                cache: KVCache | None, kv_len: int, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        c, hd = self.cfg, self.cfg.head_dim
        q = self.wq(x).view(B, T, c.n_heads, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.wk(x).view(B, T, c.n_kv_heads, hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.wv(x).view(B, T, c.n_kv_heads, hd).transpose(1, 2)  # (B, nkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:  # whole sequences: plain causal attention over this input
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
        else:
            cache.write(self.layer, k, v, positions)
            k = cache.k[self.layer, :, :, :kv_len]  # (B, nkv, L, hd)
            v = cache.v[self.layer, :, :, :kv_len]
            if x.is_cuda:
                y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, enable_gqa=True)
            else:
                y = cpu_attention(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, T, c.n_heads * hd)  # (B, T, nh*hd)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), *args)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    """Token ids or input embeddings -> logits (or final hidden states), with optional KV cache."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.cache: KVCache | None = None  # set by setup_cache
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # --- cache ----------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_len: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                  ring: bool = False) -> KVCache:
        """A fresh cache (not attached): pass it as ``cache=`` (one per concurrent caller).
        ``ring``: a sliding window of ``max_len`` positions instead of a hard end."""
        p = self.tok_embeddings.weight
        return KVCache(self.cfg, batch_size, max_len or self.cfg.max_seq_len,
                       device=device or p.device, dtype=dtype or p.dtype, ring=ring)

    def setup_cache(self, batch_size: int, max_len: int | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                    ring: bool = False) -> KVCache:
        """Attach a static cache used by ``forward(..., use_cache=True)``."""
        self.cache = self.new_cache(batch_size, max_len, device, dtype, ring)
        return self.cache

    def reset_rows(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Forget the attached cache's past for some rows (bool mask (B,) or indices; None = all)."""
        if self.cache is None:
            raise RuntimeError("no cache: call setup_cache first")
        self.cache.reset_rows(rows)

    # --- forward --------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor | None = None,  # (B, T) token ids
        *,
        embeds: torch.Tensor | None = None,  # (B, T, dim) input embeddings instead of ids
        positions: torch.Tensor | None = None,  # (B, T), or (B,) = start position of each row
        use_cache: bool = False,  # read/write the attached cache (setup_cache)
        cache: KVCache | None = None,  # or an explicit cache
        return_hidden: bool = False,  # final-normed hidden states (B, T, dim) instead of logits
        last_only: bool = False,  # compute the output for the last position only
    ) -> torch.Tensor:
        """-> logits (B, T, vocab) or hidden (B, T, dim) (T = 1 with ``last_only``).

        Without a cache the input is one causal sequence per row (training, scoring). With a cache
        the input continues each row's stream at ``positions`` (required then).
        """
        if (tokens is None) == (embeds is None):
            raise ValueError("pass exactly one of tokens (B, T) or embeds (B, T, dim)")
        x = self.tok_embeddings(tokens) if embeds is None else embeds  # (B, T, dim)
        B, T, _ = x.shape
        if cache is None and use_cache:
            if self.cache is None:
                raise RuntimeError("use_cache=True needs setup_cache() first")
            cache = self.cache
        if positions is None:
            if cache is not None:
                raise ValueError("positions are required with a cache")
            positions = torch.arange(T, device=x.device).expand(B, T)
        elif positions.dim() == 1:  # start position per row
            positions = positions[:, None] + torch.arange(T, device=x.device)
        positions = positions.long()  # (B, T)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        kv_len, mask = 0, None
        if cache is not None:
            kv_len = cache.max_len
            if not cache.static and not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
                kv_len = int(positions.max()) + 1  # eager: attend to the used prefix only
                if cache.ring:
                    if T > cache.max_len:
                        raise ValueError(f"{T} tokens at once do not fit a ring of {cache.max_len}")
                    kv_len = min(kv_len, cache.max_len)
                elif kv_len > cache.max_len:
                    raise ValueError(f"position {kv_len - 1} beyond the cache length {cache.max_len}")
            cache.mark(positions)
            mask = cache.attn_mask(positions, kv_len)  # (B, 1, T, L)
        for layer in self.layers:
            x = layer(x, cos, sin, positions, cache, kv_len, mask)
        if last_only:
            x = x[:, -1:]
        h = self.norm(x)  # (B, T, dim)
        return h if return_hidden else self.output(h)  # (B, T, vocab)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
