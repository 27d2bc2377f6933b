"""Residual vector quantization with EMA codebooks (EnCodec's `quantization.core_vq` layout).

State-dict names match EnCodec: `quantizer.vq.layers.{k}._codebook.{inited,cluster_size,embed,
embed_avg}`. Differences, all training-side: k-means initialisation with a matmul distance
(EnCodec's broadcast needs N x bins x dim memory), quantizer dropout per batch item, distances
always in float32 (also under bf16 autocast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _sq_dist(x: torch.Tensor, embed: torch.Tensor, embed_sq: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, D), embed (C, D) -> squared distances (N, C); embed_sq: cached |embed|^2 (C,)."""
    x, embed = x.float(), embed.float()  # distances in float32 also when the codec runs in bf16
    if embed_sq is None:
        embed_sq = embed.pow(2).sum(1)
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed_sq.float()[None]


def _sample(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    return x[torch.randint(0, x.shape[0], (n,), device=x.device)]


def kmeans(x: torch.Tensor, n: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain k-means: x (N, D) -> (means (n, D), counts (n,))."""
    means = _sample(x, n)
    counts = torch.zeros(n, device=x.device)
    for _ in range(iters):
        idx = _sq_dist(x, means).argmin(-1)
        counts = torch.bincount(idx, minlength=n).float()
        sums = torch.zeros_like(means).index_add_(0, idx, x)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], means)
    return means, counts


class EuclideanCodebook(nn.Module):
    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = True, kmeans_iters: int = 10,
                 decay: float = 0.99, epsilon: float = 1e-5, threshold_ema_dead_code: float = 2.0) -> None:
        super().__init__()
        self.codebook_size, self.decay, self.epsilon = codebook_size, decay, epsilon
        self.kmeans_iters, self.threshold_ema_dead_code = kmeans_iters, threshold_ema_dead_code
        embed = torch.zeros(codebook_size, dim) if kmeans_init else nn.init.kaiming_uniform_(
            torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.Tensor([not kmeans_init]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self._sq_cache: tuple[tuple, torch.Tensor] | None = None
        self._inited_seen = False  # host-side copy of `inited` once true: no GPU sync per step

    def is_inited(self) -> bool:
        if not self._inited_seen:
            self._inited_seen = bool(self.inited.item())
        return self._inited_seen

    def _embed_sq(self) -> torch.Tensor:
        """|embed|^2 per entry, recomputed only when `embed` changed (in-place updates bump _version)."""
        e = self.embed
        key = (e.data_ptr(), e._version, e.dtype, e.device)
        if self._sq_cache is None or self._sq_cache[0] != key:
            self._sq_cache = (key, e.float().pow(2).sum(1))
        return self._sq_cache[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> codes (N,) nearest entry."""
        return _sq_dist(x.float(), self.embed, self._embed_sq()).argmin(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def init_kmeans(self, x: torch.Tensor) -> None:
        means, counts = kmeans(x.float(), self.codebook_size, self.kmeans_iters)
        self.embed.copy_(means)
        self.embed_avg.copy_(means)
        self.cluster_size.copy_(counts)
        self.inited.fill_(1.0)
        self._inited_seen = True

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of cluster sizes and sums; dead entries (EMA size < threshold) restart from x."""
        x = x.float()
        if not self.is_inited():
            self.init_kmeans(x)
        # EnCodec's threshold (2) assumes ~5k vectors per batch and 1024 entries; with smaller batches
        # every entry's EMA size sits below it. Scale it to the expected size N / bins.
        thr = min(self.threshold_ema_dead_code, 0.05 * x.shape[0] / self.codebook_size)
        dead = self.cluster_size < thr
        if self.threshold_ema_dead_code > 0:  # masked, not branched on: no GPU sync per step
            self.embed.copy_(torch.where(dead[:, None], _sample(x, self.codebook_size), self.embed))
            # restarted entries start with a fresh average (EnCodec keeps the stale one)
            fresh = x.shape[0] / self.codebook_size  # restarted entries get the average size
            self.embed_avg.copy_(torch.where(dead[:, None], self.embed * fresh, self.embed_avg))
            self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, fresh),
                                                self.cluster_size))
        onehot_sum = torch.bincount(codes, minlength=self.codebook_size).float()
        self.cluster_size.mul_(self.decay).add_(onehot_sum, alpha=1 - self.decay)
        embed_sum = torch.zeros_like(self.embed).index_add_(0, codes, x)
        self.embed_avg.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / size[:, None])


class VectorQuantization(nn.Module):
    def __init__(self, dim: int, codebook_size: int, **kw: float) -> None:
        super().__init__()
        self.project_in = nn.Identity()
        self.project_out = nn.Identity()
        self._codebook = EuclideanCodebook(dim, codebook_size, **kw)  # type: ignore[arg-type]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D, T) -> codes (B, T)."""
        B, D, T = x.shape
        return self._codebook.encode(x.transpose(1, 2).reshape(-1, D)).view(B, T)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T) -> (B, D, T)."""
        return self._codebook.decode(codes).transpose(1, 2)


@dataclass
class QuantizedResult:
    quantized: torch.Tensor  # (B, D, T) straight-through quantized latents (dropout applied)
    codes: torch.Tensor  # (B, K, T)
    commit_loss: torch.Tensor  # scalar
    n_q: torch.Tensor  # (B,) number of codebooks used per item
    usage: torch.Tensor  # (K,) fraction of codebook entries used in this batch
    first: torch.Tensor  # (B, D, T) straight-through first level (the semantic head reads it)


class ResidualVectorQuantization(nn.Module):
    def __init__(self, num_quantizers: int, dim: int, codebook_size: int, **kw: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VectorQuantization(dim, codebook_size, **kw)
                                     for _ in range(num_quantizers)])

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """x (B, D, T) -> codes (K, B, T) (EnCodec order)."""
        residual = x.float()
        out = []
        for layer in self.layers[: n_q or len(self.layers)]:
            codes = layer.encode(residual)
            residual = residual - layer.decode(codes)
            out.append(codes)
        return torch.stack(out)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (K, B, T) -> (B, D, T)."""
        q = self.layers[0].decode(codes[0])
        for k in range(1, codes.shape[0]):
            q = q + self.layers[k].decode(codes[k])
        return q


class ResidualVectorQuantizer(nn.Module):
    """`quantizer` of the codec (EnCodec name); its `.vq` holds the layers."""

    def __init__(self, dimension: int = 128, n_q: int = 8, bins: int = 2048, decay: float = 0.99,
                 kmeans_init: bool = True, kmeans_iters: int = 10, threshold_ema_dead_code: float = 2.0) -> None:
        super().__init__()
        self.n_q, self.dimension, self.bins = n_q, dimension, bins
        self.vq = ResidualVectorQuantization(n_q, dimension, bins, decay=decay, kmeans_init=kmeans_init,
                                             kmeans_iters=kmeans_iters,
                                             threshold_ema_dead_code=threshold_ema_dead_code)

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """x (B, D, T) -> codes (B, K, T)."""
        return self.vq.encode(x, n_q).transpose(0, 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) -> (B, D, T)."""
        return self.vq.decode(codes.transpose(0, 1))

    @torch.no_grad()
    def init_kmeans(self, x: torch.Tensor) -> None:
        """k-means-initialise every level on latents x (B, D, T), level by level on the residual."""
        residual = x.float().transpose(1, 2).reshape(-1, x.shape[1])
        for layer in self.vq.layers:
            cb = layer._codebook
            cb.init_kmeans(residual)
            residual = residual - cb.decode(cb.encode(residual))

    def forward(self, x: torch.Tensor, dropout_p: float = 0.0, bypass_p: float = 0.0) -> QuantizedResult:
        """Training pass: EMA updates (in train mode), straight-through estimator, per-item dropout.

        x (B, D, T). With probability `dropout_p` an item uses only the first n ~ U{1..K} levels;
        with probability `bypass_p` an item's decoder input is the unquantized latent (Mimi trains
        the decoder on unquantized latents half of the time). Codes, EMA and commitment are
        computed for every item either way.
        """
        B, D, T = x.shape
        x = x.float()
        K = self.n_q
        n_q = torch.full((B,), K, device=x.device)
        if self.training and dropout_p > 0:
            drop = torch.rand(B, device=x.device) < dropout_p
            n_q = torch.where(drop, torch.randint(1, K + 1, (B,), device=x.device), n_q)
        residual = x
        quant = torch.zeros_like(x)
        codes, commit, usage = [], x.new_zeros(()), []
        for k, layer in enumerate(self.vq.layers):
            cb = layer._codebook
            flat = residual.detach().transpose(1, 2).reshape(-1, D)
            if self.training:
                c = cb.encode(flat) if cb.is_inited() else None
                if c is None:
                    cb.init_kmeans(flat)
                    c = cb.encode(flat)
                cb.ema_update(flat, c)
            else:
                c = cb.encode(flat)
            q = cb.decode(c).view(B, T, D).transpose(1, 2)  # (B, D, T)
            keep = (k < n_q).float().view(B, 1, 1)
            commit = commit + (F.mse_loss(residual, q.detach(), reduction="none") * keep).mean()
            quant = quant + q * keep
            if k == 0:
                first_q = q
            residual = residual - q.detach()
            codes.append(c.view(B, T))
            usage.append((torch.bincount(c, minlength=self.bins) > 0).float().mean())
        quantized = x + (quant - x).detach()  # straight-through: gradient of identity to the encoder
        if self.training and bypass_p > 0:
            bypass = (torch.rand(B, 1, 1, device=x.device) < bypass_p).float()
            quantized = bypass * x + (1 - bypass) * quantized
        first = x + (first_q - x).detach()
        return QuantizedResult(quantized, torch.stack(codes, 1), commit / K, n_q,
                               torch.stack(usage), first)
