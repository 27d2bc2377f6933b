"""The Whisper semantic teacher and the codec's distillation head.

- The teacher (a self-contained copy of Whisper's encoder, loaded from its own file) gives the
  same features as openai-whisper's encoder on real speech.
- Pooling to 12.5 / 25 Hz frames, the cosine loss, and a clear error for a bad teacher file.
- A tiny semantic codec trains on CPU through the real loop, and its distillation loss falls.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec.semantic import FEATURE_HOP, load_teacher, pool_to_frames, save_teacher, semantic_loss
from model.samples import have_prompts, prompt_wav


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from whisper.audio import mel_filters

    from codec.semantic import teacher_from_whisper
    from model.components.asr import WhisperASR

    asr = WhisperASR.load("tiny.en")
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_teacher(teacher_from_whisper(asr.model, mel_filters("cpu", 80)), path)
    return path, asr


@pytest.mark.skipif(not have_prompts(), reason="needs asterisk-core-sounds-en-g722 + ffmpeg")
def test_teacher_matches_whisper_encoder(teacher_file, one_torch_thread) -> None:
    import soundfile as sf

    from model.components.asr import log_mel

    path, asr = teacher_file
    teacher = load_teacher(path)
    x, sr = sf.read(prompt_wav("vm-sorry"), dtype="float32")
    assert sr == 16000
    mel = log_mel([x], 80, "cpu")  # (1, 80, 3000): whisper's 30 s padded input
    with torch.no_grad():
        ref = asr.model.encoder(mel)  # (1, 1500, 384)
        got = teacher.encode_mel(mel)
    rel = (got - ref).norm() / ref.norm()
    assert rel < 2e-3, float(rel)  # the teacher file stores float16 weights
    # the teacher's own mel (no 30 s padding) on the clip: features of the speech frames agree
    with torch.no_grad():
        own = teacher(torch.from_numpy(x)[None])
    n = own.shape[1]
    assert n == (len(x) // 160 + 1) // 2  # 100 Hz mel frames, then stride 2
    cos = torch.nn.functional.cosine_similarity(own[0, : n - 25], ref[0, : n - 25], dim=-1).mean()
    assert cos > 0.8, float(cos)


def test_pool_and_loss() -> None:
    f = torch.randn(2, 40, 8)  # 0.8 s at 50 Hz
    p25 = pool_to_frames(f, 20, 640)
    torch.testing.assert_close(p25[:, 3], f[:, 6:8].mean(1))
    assert pool_to_frames(f, 10, 1280).shape == (2, 10, 8)
    assert pool_to_frames(f[:, :39], 20, 640).shape == (2, 20, 8)  # short by one: edge repeated
    with pytest.raises(ValueError):
        pool_to_frames(f, 20, 600)
    assert float(semantic_loss(f, f)) < 1e-6
    assert abs(float(semantic_loss(f, -f)) - 2.0) < 1e-5


def test_bad_teacher_file(tmp_path) -> None:
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable teacher file"):
        load_teacher(bad)


def test_tiny_semantic_training_lowers_distillation_loss(teacher_file, tmp_path, one_torch_thread) -> None:
    from codec.train import TrainConfig, train
    from codec.variants import get_variant
    from tests.test_codec_train import _shards

    path, _ = teacher_file
    _shards(tmp_path / "data")
    v = get_variant("25hz-sem-bypass", tiny=True)
    assert v.codec.semantic_dim == 384 and v.codec.hop_length % FEATURE_HOP == 0
    tc = TrainConfig(batch_size=4, segment_s=0.8, max_steps=40, adv_start=1000, log_every=10, lr=3e-3,
                     kmeans_batches=2, warmup_steps=2, augment=False, disc_filters=4, teacher=str(path),
                     bypass_p=v.bypass_p, w_sem=10.0)
    train(tmp_path / "data", tmp_path / "run", v.codec, tc, device="cpu")
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    sem = [r["sem"] for r in logs]
    assert np.isfinite(sem).all() and sem[-1] < sem[0] * 0.9, sem
