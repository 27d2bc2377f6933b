"""Sampling of the direct speech model: a (B, V) torch batch per stream (its text token and its K
audio codebooks), temperature and top-k only, CUDA-graph safe (Gumbel-max, no multinomial and no
host sync). The text LLM's sampler (NumPy, one row, top-p and repetition penalty) is
``model/sampling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpeechSamplingParams:
    """The direct speech model's two streams: its text token and its K audio codebooks."""

    text_temperature: float = 0.7  # 0 = greedy
    text_top_k: int = 25
    audio_temperature: float = 0.8
    audio_top_k: int = 250


def sample_batch(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """logits (B, V) -> ids (B,). Gumbel-max over the top-k: CUDA-graph safe (no multinomial).
    The noise is drawn for the k candidates only (not the whole vocabulary): the same distribution,
    5-10x less work on a CPU for the text head's 49k tokens."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float()
    if 0 < top_k < logits.shape[-1]:
        vals, idx = torch.topk(logits, top_k, dim=-1)  # (B, k)
        u = torch.rand_like(vals).clamp_(1e-10, 1.0)
        pick = (vals / temperature - torch.log(-torch.log(u))).argmax(-1, keepdim=True)  # (B, 1)
        return idx.gather(-1, pick).squeeze(-1)
    u = torch.rand_like(logits).clamp_(1e-10, 1.0)
    return (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
