"""LoRA adapters for the frozen backbone: y = W x + (alpha / r) * B (A x), with A, B trained.

``apply_lora(module, targets, rank, alpha)`` swaps every ``nn.Linear`` whose attribute name is in
``targets`` for a ``LoRALinear`` that wraps it (the base weight stays where it was, frozen). B
starts at zero, so a fresh adapter leaves the model's outputs unchanged. ``merge_lora`` folds the
adapters into the base weights for inference (one matmul per projection again).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = alpha / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:  # code that reads .weight (e.g. tied heads) sees the base
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in) -> (..., out)
        y = self.base(x)
        if self.merged:
            return y
        a = self.lora_a.to(x.dtype)
        b = self.lora_b.to(x.dtype)
        return y + (x @ a.t() @ b.t()) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale
            self.base.weight += delta.to(self.base.weight.dtype)
            self.merged = True


def apply_lora(module: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Replace each ``nn.Linear`` child named in ``targets`` (anywhere below ``module``).

    Returns the dotted names of the wrapped layers. Raises ValueError when nothing matched (a
    renamed backbone would otherwise silently train no adapter).
    """
    wrapped: list[str] = []
    for parent_name, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{parent_name}.{name}" if parent_name else name)
    if not wrapped:
        raise ValueError(f"no nn.Linear named any of {targets} below {type(module).__name__}")
    return wrapped


def lora_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if n.endswith(("lora_a", "lora_b"))}


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its base weight; returns how many were merged."""
    n = 0
    for m in module.modules():
        if isinstance(m, LoRALinear) and not m.merged:
            m.merge()
            n += 1
    return n


@torch.no_grad()
def fold_lora_state(sd: dict[str, torch.Tensor], params: dict[str, torch.Tensor], scale: float) -> list[str]:
    """Add each adapter pair ``NAME.lora_a`` / ``NAME.lora_b`` of ``sd`` to ``params["NAME.weight"]``
    in place (a LoRA stage continued with full fine-tuning) and drop the pair from ``sd``; returns the
    folded NAMEs. ``scale``: the LoRA stage's alpha / rank. Raises KeyError for a NAME with no weight."""
    names = sorted(k[: -len(".lora_a")] for k in sd if k.endswith(".lora_a"))
    for name in names:
        w = params[f"{name}.weight"]  # (out, in)
        a, b = sd.pop(f"{name}.lora_a").float(), sd.pop(f"{name}.lora_b").float()  # (r, in), (out, r)
        w += ((b.to(w.device) @ a.to(w.device)) * scale).to(w.dtype)
    return names
