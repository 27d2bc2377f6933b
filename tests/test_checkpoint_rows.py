"""A tensor over the 16 MiB per-file rule (a fully fine-tuned backbone's int8 embedding: 28 MB) is
written as row blocks in several files and read back whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.common.checkpoint import join_rows, split_rows
from model.presets import tiny_speech_config
from model.speech_ckpt import build_model, read_trained, save_trained


def test_split_rows_round_trip() -> None:
    sd = {"emb.int8": torch.randint(-127, 128, (1000, 300), dtype=torch.int8), "bias": torch.randn(7)}
    parts = split_rows(sd, 64 * 1024)
    assert "bias" in parts and "emb.int8" not in parts
    assert all(v.numel() * v.element_size() <= 64 * 1024 for v in parts.values())
    back = join_rows(parts)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    del parts["emb.int8.rows1of5"]
    with pytest.raises(ValueError, match="row blocks missing"):
        join_rows(parts)


def test_a_row_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be cut"):
        split_rows({"w": torch.zeros(2, 100_000)}, 64 * 1024)


def test_full_finetuned_export_over_the_file_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model.speech_ckpt as ck

    torch.manual_seed(0)
    full = build_model(tiny_speech_config(0, train_backbone=True), pretrained=False)
    q = ck.quantize_int8(full.trainable_state_dict())
    size = {k: v.numel() * v.element_size() for k, v in q.items()}
    big = max(size, key=size.get)
    limit = max(size[big] // 3, max(size[k] // q[k].shape[0] for k in q if q[k].ndim))  # the largest: >= 3 files
    monkeypatch.setattr(ck, "MAX_FILE_BYTES", limit)
    save_trained(full, tmp_path / "s2s")
    files = list((tmp_path / "s2s").glob("*.safetensors"))
    assert len(files) >= 3 and all(p.stat().st_size <= limit + 64 * 1024 for p in files)
    _, sd, _ = read_trained(tmp_path / "s2s")
    want = full.trainable_state_dict()
    assert sd.keys() == want.keys()
    for k, v in want.items():  # int8 per-row absmax: within one step of the row's scale
        assert torch.allclose(sd[k], v.float(), atol=float(v.abs().max()) / 100 + 1e-6), k


def test_codec_over_the_file_limit_loads_back(tmp_path: Path, tiny_codec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The codec shares the writer: its reader joins the row blocks too."""
    import codec.io as cio

    c = cio.load_codec(tiny_codec)
    want = cio.export_state(c)
    size = {k: v.numel() * v.element_size() for k, v in want.items()}
    big = max(size, key=size.get)
    monkeypatch.setattr(cio, "MAX_SHARD_BYTES", max(size[big] // 2, max(
        size[k] // want[k].shape[0] for k in want if want[k].ndim)))  # the largest tensor: >= 2 row blocks
    cio.save_codec(c, tmp_path / "codec")
    got = cio.export_state(cio.load_codec(tmp_path / "codec", verify=True))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
