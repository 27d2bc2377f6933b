"""Next-token sampling: repetition penalty, temperature, top-k, top-p (nucleus), greedy.

Pure tensor functions over one row of logits; the engine owns the loop and the RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def apply_repetition_penalty(logits: torch.Tensor, recent: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (V,) fp32; recent token ids (n,). Positive logits are divided, negative multiplied."""
    if penalty == 1.0 or recent.numel() == 0:
        return logits
    ids = recent.unique()
    sel = logits[ids]
    logits = logits.clone()
    logits[ids] = torch.where(sel > 0, sel / penalty, sel * penalty)
    return logits


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits (V,) -> same with the tokens outside the top-k / nucleus set to -inf."""
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already >= top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def sample_next(
    logits: torch.Tensor, params: SamplingParams, recent: torch.Tensor, generator: torch.Generator | None = None
) -> int:
    """logits (V,) of the next position -> token id."""
    logits = apply_repetition_penalty(logits.float(), recent, params.repetition_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
