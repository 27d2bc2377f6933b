"""Next-token sampling of the text LLM: temperature, top-k, top-p, repetition penalty.

``SamplingParams`` + ``sample_next``: one row of logits as a NumPy array (the caller owns the loop
and the RNG). The direct speech model samples batched torch logits inside a CUDA graph instead:
``model/speech_sampling.py``. NumPy rather than torch on purpose: these are ~50k-element vectors, and torch's multi-threaded
element-wise kernels spend milliseconds in thread hand-offs on a loaded 2-core CPU (measured
7 ms for a clone with 2 threads under load vs 4 us with 1), while NumPy stays single-threaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 = greedy (argmax)
    top_p: float = 0.9  # keep the smallest set of tokens whose probability sums to >= top_p (1 = off)
    top_k: int = 0  # keep the k most likely tokens (0 = off)
    repetition_penalty: float = 1.1  # >1 discourages recent tokens (CTRL / llama.cpp style; 1 = off)
    repetition_window: int = 64  # how many of the most recent tokens (prompt included) are penalized
    seed: int | None = None  # None: a fresh random seed per call

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"bad sampling parameters: {self}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(V,) -> log-probabilities (float64)."""
    x = logits.astype(np.float64) - logits.max()
    return x - np.log(np.exp(x).sum())


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.exp(logits.astype(np.float64) - logits.max())
    return x / x.sum()


def apply_repetition_penalty(logits: np.ndarray, recent: np.ndarray | list[int], penalty: float) -> np.ndarray:
    """logits (V,); recent token ids. Positive logits are divided, negative multiplied (new array)."""
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    if penalty == 1.0 or ids.size == 0:
        return logits
    out = logits.copy()
    sel = out[ids]
    out[ids] = np.where(sel > 0, sel / penalty, sel * penalty)
    return out


def filter_top_k_top_p(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """logits (V,) -> a copy with the tokens outside the top-k / nucleus set to -inf."""
    out = logits.astype(np.float64)
    if 0 < top_k < out.size:
        kth = np.partition(out, -top_k)[-top_k]
        out[out < kth] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-out, kind="stable")
        p = softmax(out[order])
        drop = np.cumsum(p) - p >= top_p  # the mass before this token already reaches top_p
        out[order[drop]] = -np.inf
    return out


TOP_CANDIDATES = 1024  # top-p first looks at this many most likely tokens (no full sort)


def sample_next(logits: np.ndarray, params: SamplingParams, recent: np.ndarray | list[int],
                rng: np.random.Generator | None = None) -> int:
    """logits (V,) of the next position -> token id.

    Same distribution as ``filter_top_k_top_p`` then softmax then a draw, computed on the top
    candidates only, drawn by inverse CDF (one uniform number from ``rng``).
    """
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), recent, params.repetition_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    rng = rng or np.random.default_rng()
    probs = softmax(logits / params.temperature)  # (V,) float64
    V = probs.size
    k = min(params.top_k, V) if params.top_k > 0 else V
    idx = None
    if params.top_p < 1.0 or k < V:
        kk = min(TOP_CANDIDATES, V) if k == V else k  # candidates (enough unless the nucleus is wider)
        idx = np.argpartition(-probs, kk - 1)[:kk] if kk < V else np.arange(V)
        if k == V and probs[idx].sum() < params.top_p:  # nucleus wider than the candidates
            idx = np.arange(V)
        idx = idx[np.argsort(-probs[idx], kind="stable")]  # most likely first
        p = probs[idx]
        if k < V:
            p = p / p.sum()  # top-k first, then top-p within it (as filter_top_k_top_p)
        if params.top_p < 1.0:
            keep = int(((np.cumsum(p) - p) < params.top_p).sum())  # mass before the token < top_p
            idx, p = idx[:keep], p[:keep]
        probs = p
    cum = np.cumsum(probs)
    j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), cum.size - 1)
    return j if idx is None else int(idx[j])
