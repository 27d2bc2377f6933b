"""A tiny codec trains on CPU through the real training loop (data shards, augmentation, k-means
init, EMA codebooks, mel + adversarial losses, checkpoint, export, resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec.train import TrainConfig, train
from codec.variants import TINY  # the tiny config `parley codec train --tiny` uses


def _shards(folder) -> None:
    import soundfile as sf

    folder.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    for i in range(2):  # harmonic "voices" with an envelope, plus a little noise
        f0 = 110 * (i + 1) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
        x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 6))
        x = 0.3 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"shard_{i:03d}.flac", (x / np.abs(x).max() * 0.5).astype(np.float32), 16000,
                 subtype="PCM_16")


def test_tiny_training_and_resume(tmp_path) -> None:
    from codec.io import load_codec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP threads only contend on a loaded 2-core machine
    try:
        _run(tmp_path, load_codec)
    finally:
        torch.set_num_threads(threads)


def _run(tmp_path, load_codec) -> None:  # type: ignore[no-untyped-def]
    _shards(tmp_path / "data")
    tc = TrainConfig(batch_size=2, segment_s=0.25, max_steps=4, adv_start=2, log_every=2,
                     kmeans_batches=2, warmup_steps=2, augment=True, disc_filters=4)
    last = train(tmp_path / "data", tmp_path / "run", TINY, tc, device="cpu")
    assert last["step"] == 4 and np.isfinite(last["mel"]) and "adv" in last and "d" in last
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 4]
    assert (tmp_path / "run" / "ckpt.pt").exists()
    exported = load_codec(tmp_path / "run" / "export", verify=True)
    assert exported.cfg == TINY
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    for k, v in exported.state_dict().items():  # exported = trained weights (float16 rounding)
        if not k.endswith("embed_avg"):
            torch.testing.assert_close(v, ck["model"][k].float(), atol=2e-3, rtol=2e-3)
    # resume: continues from step 4 to 6
    last = train(tmp_path / "data", tmp_path / "run",
                 TINY, TrainConfig(**{**tc.__dict__, "max_steps": 6}), device="cpu")
    assert last["step"] == 6


def test_export_best_keeps_the_best_held_out_checkpoint(tmp_path) -> None:
    from codec.train import _keep_best, eval_score

    def res(step: int, stoi: float, cos: float) -> dict:
        return {"step": step, "real": {"mel_dist": 0.4, "stoi": stoi, "whisper_cos": cos, "n": 40}}

    (tmp_path / "export").mkdir()
    for step, stoi, cos in ((100, 0.60, 0.70), (200, 0.72, 0.79), (300, 0.66, 0.75)):
        (tmp_path / "export" / "model.safetensors").write_text(f"weights of step {step}")
        _keep_best(tmp_path, res(step, stoi, cos))
    best = tmp_path / "export_best"
    assert (best / "model.safetensors").read_text() == "weights of step 200"  # not the last one
    assert json.loads((best / "eval.json").read_text())["step"] == 200
    assert eval_score(res(1, 0.5, 0.5)) == 1.0
    assert eval_score({"real": {"mel_dist": 0.3}}) == -0.3


def test_warm_start_into_more_codebooks(tmp_path) -> None:
    """The bitrate trade-off arm starts from a trained codec: shared weights copied, the extra RVQ
    levels k-means-initialised by the first step; any other config difference is refused."""
    from dataclasses import replace

    from codec.io import load_codec, save_codec
    from codec.model import ParleyCodec
    from codec.train import _warm_start

    _shards(tmp_path / "data")
    tc = TrainConfig(batch_size=2, segment_s=0.25, max_steps=2, log_every=1, kmeans_batches=2,
                     warmup_steps=1, augment=False)
    train(tmp_path / "data", tmp_path / "small", TINY, tc, device="cpu")
    src = load_codec(tmp_path / "small" / "export")
    wide = replace(TINY, n_q=4)
    m = ParleyCodec(wide)
    assert _warm_start(m, src) == 2
    for k, v in src.state_dict().items():
        if not k.endswith("embed_avg"):
            torch.testing.assert_close(m.state_dict()[k], v)
    assert [bool(layer._codebook.inited.item()) for layer in m.quantizer.vq.layers] == [True, True, False, False]
    last = train(tmp_path / "data", tmp_path / "wide", wide, tc, device="cpu", init_from=tmp_path / "small" / "export")
    assert last["step"] == 2 and np.isfinite(last["mel"])
    assert all(bool(layer._codebook.inited.item()) for layer in load_codec(tmp_path / "wide" / "export").quantizer.vq.layers)
    with pytest.raises(ValueError, match="only more codebooks"):
        _warm_start(ParleyCodec(replace(TINY, dimension=16)), src)
    with pytest.raises(ValueError, match="only more codebooks"):
        save_codec(m, tmp_path / "w4")
        _warm_start(ParleyCodec(TINY), load_codec(tmp_path / "w4"))  # fewer codebooks than the source
