"""`--init` of a LoRA export into a fully fine-tuned model folds the adapters into the backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.train_run import _init_from
from model.common.errors import ParleyError
from model.lora import merge_lora
from model.presets import tiny_speech_config
from model.speech_ckpt import build_model, save_trained


def _lora_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model(tiny_speech_config(4), pretrained=False)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad:  # as if trained: B != 0, heads moved
                p.add_(torch.randn_like(p) * 0.05)
    return m


def _full_model_with_base_of(lora: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    full = build_model(tiny_speech_config(0, train_backbone=True), pretrained=False)
    base = {n.replace(".base.", "."): p for n, p in lora.backbone.named_parameters() if "lora_" not in n}
    with torch.no_grad():  # the same backbone weights (the GGUF's, for the real model)
        for n, p in full.backbone.named_parameters():
            p.copy_(base[n])
    return full


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_lora_export_continues_as_full_finetuning(tmp_path: Path, dtype: torch.dtype) -> None:
    lora = _lora_model()
    save_trained(lora, tmp_path / "s2s", {"codec_id": "x"}, dtype=dtype)
    full = _full_model_with_base_of(lora)
    before = {n: p.detach().clone() for n, p in full.backbone.named_parameters()}
    _init_from(full, tmp_path / "s2s")

    merge_lora(lora)  # W + (alpha / r) B A: what the LoRA model computes
    want = {n.replace(".base.", "."): p for n, p in lora.named_parameters() if "lora_" not in n}
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # int8 export: per-row absmax rounding
    moved = 0
    for n, p in full.named_parameters():
        assert torch.allclose(p, want[n], atol=tol), n
        if n.startswith("backbone.") and not torch.equal(p, before[n[len("backbone."):]]):
            moved += 1
    assert moved >= 2 * len(tiny_speech_config(4).lora_targets)  # every adapted layer of both blocks


def test_full_export_does_not_continue_as_lora(tmp_path: Path) -> None:
    full = _full_model_with_base_of(_lora_model())
    save_trained(full, tmp_path / "s2s", dtype=torch.float32)
    torch.manual_seed(0)
    lora = build_model(tiny_speech_config(4), pretrained=False)
    with pytest.raises(ParleyError, match="cannot continue as LoRA"):
        _init_from(lora, tmp_path / "s2s")
