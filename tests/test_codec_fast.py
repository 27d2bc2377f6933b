"""The fast CPU streaming path (codec/fast.py) == the torch streaming path: identical codes and
audio within float rounding, frame by frame and in chunks of several frames, with per-row state
reset; for the shipped 12.5 Hz weights on real speech and for a small random 25 Hz codec."""

from __future__ import annotations

import glob
import shutil
import subprocess

import numpy as np
import pytest
import torch

from codec.fast import FastCodec, supports
from codec.model import CodecConfig, ParleyCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = sorted(glob.glob("/usr/share/asterisk/sounds/en_US_f_Allison/*.g722"))
# 25 Hz (hop 640, the v2 arms' strides), narrow: the same layer types as the real codec
SMALL_25HZ = CodecConfig(ratios=(8, 5, 4, 4), n_filters=8, dimension=32, lstm=2, n_q=8, bins=256)
ATOL = 1e-4  # audio: float rounding (measured ~4e-7 on the v1 weights)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """~4 s of held-out real speech (asterisk-core-sounds-en), (1, 1, T) at 16 kHz."""
    if not PROMPTS or not shutil.which("ffmpeg"):
        pytest.skip("needs asterisk-core-sounds-en-g722 + ffmpeg")
    parts = []
    for p in [p for p in PROMPTS if "all-circuits-busy-now" in p or "agent-loginok" in p] or PROMPTS[:2]:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", p, "-ac", "1", "-ar", "16000",
                              "-f", "s16le", "-"], capture_output=True, check=True).stdout
        parts.append(np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0)
    return torch.from_numpy(np.concatenate(parts))[None, None]


@pytest.fixture(scope="module")
def v1() -> ParleyCodec:
    from codec.io import load_codec

    return load_codec()


@pytest.fixture(scope="module")
def small25(speech: torch.Tensor) -> ParleyCodec:
    torch.manual_seed(0)
    m = ParleyCodec(SMALL_25HZ).eval()
    with torch.no_grad():  # codebooks from k-means on the model's own latents of real speech
        m.quantizer.init_kmeans(m.encode_latent(speech))
        for layer in m.quantizer.vq.layers:  # ~100 frames for 256 entries: k-means leaves duplicate
            e = layer._codebook.embed       # entries (exact ties that float rounding breaks at random)
            e.add_(torch.randn_like(e) * 0.05 * e.std())
    return m


def _frames(x: torch.Tensor, hop: int) -> torch.Tensor:
    n = x.shape[-1] // hop
    return x[..., : n * hop]


def _stream(m: ParleyCodec | FastCodec, x: torch.Tensor, chunks: list[int],
            reset_at: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode + decode chunk by chunk -> (codes (B, K, T), audio (B, 1, T * hop)); with `reset_at`,
    row 0's streams restart at that frame."""
    hop = m.hop_length
    codes, audio, pos, i = [], [], 0, 0
    with torch.no_grad(), m.streaming(x.shape[0]):
        while pos < x.shape[-1]:
            n = chunks[i % len(chunks)]
            if reset_at is not None and pos == reset_at * hop:
                m.reset_streaming(torch.tensor([True] + [False] * (x.shape[0] - 1)))
            c = m.encode(x[..., pos : pos + n * hop])
            codes.append(c)
            audio.append(m.decode(c))
            pos += n * hop
            i += 1
    return torch.cat(codes, -1), torch.cat(audio, -1)


def _assert_same(fast: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert fast[0].dtype == torch.int64 and fast[0].shape == ref[0].shape
    assert torch.equal(fast[0], ref[0]), f"{(fast[0] != ref[0]).float().mean():.4f} of the codes differ"
    assert fast[1].shape == ref[1].shape
    assert (fast[1] - ref[1]).abs().max() < ATOL


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_v1_weights_real_speech_frame_by_frame(v1: ParleyCodec, speech: torch.Tensor, backend: str) -> None:
    x = _frames(speech, v1.hop_length)
    _assert_same(_stream(FastCodec(v1, backend), x, [1]), _stream(v1, x, [1]))


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_25hz_real_speech_frame_by_frame(small25: ParleyCodec, speech: torch.Tensor, backend: str) -> None:
    x = _frames(speech, small25.hop_length)
    _assert_same(_stream(FastCodec(small25, backend), x, [1]), _stream(small25, x, [1]))


@pytest.mark.parametrize("chunks", [[3], [1, 2, 5]])
def test_chunks_of_several_frames_batch_of_two(small25: ParleyCodec, speech: torch.Tensor,
                                               chunks: list[int]) -> None:
    x = _frames(speech, small25.hop_length)[..., : 24 * small25.hop_length]
    x = torch.cat([x, 0.5 * x.flip(-1)])  # (2, 1, T): two different streams
    ref = _stream(small25, x, chunks)
    _assert_same(_stream(FastCodec(small25), x, chunks), ref)
    with torch.no_grad():  # and the torch streaming path is the full pass
        assert torch.equal(ref[0], small25.encode(x))


def test_reset_one_row(v1: ParleyCodec, speech: torch.Tensor) -> None:
    """Row 0 restarts at frame 5: it then equals a fresh stream of its remaining audio, row 1 goes on."""
    hop = v1.hop_length
    x = _frames(speech, hop)[..., : 16 * hop]
    x = torch.cat([x, x.roll(3 * hop, -1)])  # (2, 1, 16 hops)
    fast = _stream(FastCodec(v1), x, [1], reset_at=5)
    _assert_same(fast, _stream(v1, x, [1], reset_at=5))
    fresh = _stream(FastCodec(v1), x[:1, :, 5 * hop :], [1])
    assert torch.equal(fast[0][:1, :, 5:], fresh[0])
    assert (fast[1][:1, :, 5 * hop :] - fresh[1]).abs().max() < ATOL
    whole = _stream(FastCodec(v1), x[1:], [1])
    assert torch.equal(fast[0][1:], whole[0])


def test_outside_streaming_is_the_full_pass(small25: ParleyCodec, speech: torch.Tensor) -> None:
    f = FastCodec(small25)
    x = speech[..., : 10 * small25.hop_length + 7]
    with torch.no_grad():
        codes = small25.encode(x)
        assert torch.equal(f.encode(x), codes)
        assert torch.equal(f.decode(codes), small25.decode(codes))
    assert not f.is_streaming


def test_fewer_codebooks_and_bad_codes(small25: ParleyCodec) -> None:
    """decode with the first K < n_q levels, as the torch path; out-of-range codes are refused."""
    codes = torch.randint(0, SMALL_25HZ.bins, (1, 3, 4))
    f = FastCodec(small25)
    with torch.no_grad(), f.streaming(1), small25.streaming(1):
        assert (f.decode(codes) - small25.decode(codes)).abs().max() < ATOL
        with pytest.raises(ValueError):
            f.decode(codes + SMALL_25HZ.bins)


def test_bad_chunks_are_refused(small25: ParleyCodec) -> None:
    """As the torch path: a chunk must be whole frames of the streaming batch; empty chunks pass."""
    f = FastCodec(small25)
    hop = small25.hop_length
    with torch.no_grad(), f.streaming(2):
        with pytest.raises(ValueError):
            f.encode(torch.zeros(2, 1, hop + 1))
        with pytest.raises(ValueError):
            f.encode(torch.zeros(3, 1, hop))
        assert f.encode(torch.zeros(2, 1, 0)).shape == (2, SMALL_25HZ.n_q, 0)
        assert f.decode(torch.zeros(2, SMALL_25HZ.n_q, 0, dtype=torch.long)).shape == (2, 1, 0)


@pytest.fixture(scope="module")
def small_tf(speech: torch.Tensor) -> ParleyCodec:
    """25 Hz with the causal-transformer bottleneck (no LSTM), a 5-frame window: 24-frame streams
    cross the window's edge; layer scale 1 so that the layers matter."""
    torch.manual_seed(0)
    m = ParleyCodec(CodecConfig(ratios=(8, 5, 4, 4), n_filters=8, dimension=32, lstm=0, transformer=2,
                                context=5, n_q=8, bins=256)).eval()
    for layer in m.modules():
        if hasattr(layer, "ls1"):
            torch.nn.init.ones_(layer.ls1)
            torch.nn.init.ones_(layer.ls2)
    with torch.no_grad():
        m.quantizer.init_kmeans(m.encode_latent(speech))
        for layer in m.quantizer.vq.layers:
            e = layer._codebook.embed
            e.add_(torch.randn_like(e) * 0.05 * e.std())
    return m


@pytest.mark.parametrize("chunks", [[1], [1, 2, 5]])
def test_transformer_bottleneck(small_tf: ParleyCodec, speech: torch.Tensor, chunks: list[int]) -> None:
    assert supports(small_tf)
    hop = small_tf.hop_length
    x = _frames(speech, hop)[..., : 24 * hop]
    x = torch.cat([x, 0.5 * x.roll(7 * hop, -1)])
    _assert_same(_stream(FastCodec(small_tf), x, chunks), _stream(small_tf, x, chunks))
    _assert_same(_stream(FastCodec(small_tf), x, [1], reset_at=9), _stream(small_tf, x, [1], reset_at=9))


def test_unsupported_codecs_are_refused() -> None:
    m = ParleyCodec(CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, lstm=1, n_q=2, bins=16,
                                pad_mode="reflect"))
    assert not supports(m)
    with pytest.raises(ValueError):
        FastCodec(m)
