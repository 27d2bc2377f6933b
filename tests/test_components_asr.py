"""Whisper ASR: CT2 -> openai-whisper conversion checked against the CT2 original (faster-whisper,
ctranslate2) on real recorded speech; batching, long audio, other checkpoint formats, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from components_util import asr, fw_transcribe, needs_prompts, speech, wer
from model.common.errors import ParleyError

pytestmark = [pytest.mark.slow, needs_prompts]

SHORT = ("vm-sorry", "auth-incorrect", "privacy-unident", "demo-nomatch", "vm-tempgreeting")


def test_converted_state_dict_matches_whisper_module() -> None:
    import torch
    from whisper.model import ModelDimensions, Whisper

    from model.components.asr import bundled_ct2_dir
    from model.components.whisper_convert import ct2_to_whisper, read_ct2

    ct2 = read_ct2(bundled_ct2_dir() / "model.bin")
    assert ct2.spec == "WhisperSpec"
    dims, sd = ct2_to_whisper(ct2)
    assert dims == dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                        n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)
    ref = Whisper(ModelDimensions(**dims)).state_dict()
    assert set(sd) == set(ref)
    for k, v in sd.items():
        assert tuple(v.shape) == tuple(ref[k].shape), k
    # the CT2 encoder positions are whisper's sinusoids: an independent check of the reader
    np.testing.assert_allclose(sd["encoder.positional_embedding"].astype(np.float32),
                               ref["encoder.positional_embedding"].numpy(), atol=2e-3)
    assert torch.is_tensor(ref["decoder.token_embedding.weight"])


def test_mel_matches_openai_whisper() -> None:
    import torch
    import whisper

    from model.components.asr import N_FRAMES, N_SAMPLES, log_mel

    x = speech("vm-sorry")
    want = whisper.log_mel_spectrogram(torch.from_numpy(x), padding=N_SAMPLES)[:, :N_FRAMES]
    got = log_mel([x], 80, "cpu")[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_encoder_matches_ctranslate2() -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch

    from model.components.asr import bundled_ct2_dir, log_mel

    mel = log_mel([speech("vm-sorry")], 80, "cpu")  # (1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(bundled_ct2_dir()), device="cpu", compute_type="float32")
    want = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    with torch.inference_mode():
        got = asr().model.encoder(mel).numpy()
    assert got.shape == want.shape == (1, 1500, 384)
    assert np.abs(got - want).max() < 1e-3  # seen: 2e-5


def test_transcribes_like_faster_whisper() -> None:
    clips = [speech(n) for n in SHORT]
    ours = asr().transcribe_batch(clips)
    for n, x, hyp in zip(SHORT, clips, ours):
        ref = fw_transcribe(x)
        assert len(ref.split()) >= 3, (n, ref)
        assert wer(ref, hyp) <= 0.1, (n, ref, hyp)
    assert "sorry" in ours[0].lower()


def test_batch_equals_single_and_silence_is_empty() -> None:
    clips = [speech("vm-sorry"), np.zeros(16000 * 2, np.float32), speech("auth-incorrect")]
    batch = asr().transcribe_batch(clips)
    assert batch[1] == ""
    assert batch[0] == asr().transcribe(clips[0])
    assert batch[2] == asr().transcribe(clips[2])


def test_long_audio_is_split_and_fully_transcribed() -> None:
    from model.components.asr import split_long

    x = np.concatenate([speech("demo-echotest"), speech("vm-options")])  # ~38 s > one window
    parts = split_long(x)
    assert len(parts) == 2 and sum(map(len, parts)) == len(x) and max(map(len, parts)) <= 30 * 16000
    text = asr().transcribe(x).lower()
    assert "echo test" in text and "pound key" in text and "main menu" in text


def test_official_pt_checkpoint_loads(tmp_path) -> None:
    import torch

    from model.components.asr import WhisperASR

    m = asr().model
    pt = tmp_path / "tiny.en.pt"  # openai-whisper's checkpoint format: dims + model_state_dict
    torch.save({"dims": m.dims.__dict__, "model_state_dict": m.state_dict()}, pt)
    other = WhisperASR.load(str(pt))
    x = speech("vm-sorry")
    assert other.transcribe(x) == asr().transcribe(x)


def test_bad_models_and_input(tmp_path) -> None:
    from model.components.asr import WhisperASR

    with pytest.raises(ParleyError, match="not found"):
        WhisperASR.load("no-such-model")
    d = tmp_path / "ct2"
    d.mkdir()
    (d / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    with pytest.raises(ParleyError, match="corrupt|truncated|unsupported"):
        WhisperASR.load(str(d))
    bad_pt = tmp_path / "x.pt"
    bad_pt.write_bytes(b"nope")
    with pytest.raises(ParleyError, match="cannot load"):
        WhisperASR.load(str(bad_pt))
    with pytest.raises(ParleyError, match="mono"):
        asr().transcribe(np.zeros((2, 16000), np.float32))


@pytest.mark.gpu
def test_gpu_fp16_batched_matches_cpu() -> None:
    """Same converted weights on CUDA (fp16 activations, one batch) transcribe like the CPU."""
    from model.components.asr import WhisperASR

    gpu = WhisperASR.load("tiny.en", device="cuda")
    assert gpu.fp16
    clips = [speech(n) for n in SHORT] * 4  # 20 clips in one batch
    got = gpu.transcribe_batch(clips, batch_size=32)
    want = asr().transcribe_batch(clips[: len(SHORT)]) * 4
    for g, w in zip(got, want):
        assert wer(w, g) <= 0.1, (w, g)


def test_concurrent_threads_give_the_same_text() -> None:
    """Server sessions call the shared model from several threads."""
    from concurrent.futures import ThreadPoolExecutor

    clips = [speech(n) for n in SHORT[:3]]
    want = [asr().transcribe(x) for x in clips]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(asr().transcribe, clips))
    assert got == want
