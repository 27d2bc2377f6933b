"""The streaming codec with its states in static buffers (codec/graph.py): frame by frame equal to the plain
streaming codec, across a row reset; the frame clock with it equals the clock without. The same calls are
captured as CUDA graphs on a GPU (the gpu-marked test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.graph import GraphedCodec
from codec.model import CodecConfig, ParleyCodec

B, FRAMES = 3, 6


def _codec(device: str = "cpu", transformer: int = 1) -> ParleyCodec:
    """A tiny random codec with random codebooks (untrained ones are zeros: every code 0)."""
    from codec.quantization import EuclideanCodebook

    torch.manual_seed(0)
    cfg = CodecConfig(n_filters=4, dimension=16, n_q=4, bins=16, lstm=1, transformer=transformer, context=4)
    codec = ParleyCodec(cfg).eval()
    for m in codec.modules():
        if isinstance(m, EuclideanCodebook):
            m.embed.normal_(0.0, 0.05)
            m.inited.fill_(1.0)
    return codec.to(device)


def _stream(codec: ParleyCodec, x: torch.Tensor, graphs: bool | None) -> tuple[list, list]:
    """x (FRAMES, B, 1, hop): codes and audio per frame; row 1 restarts at frame 3."""
    import copy

    c = copy.deepcopy(codec)
    c.start_streaming(B)
    g = GraphedCodec(c, B, graphs=graphs) if graphs is not None else None
    enc, dec = (g.encode, g.decode) if g else (c.encode, c.decode)
    codes, wavs = [], []
    with torch.no_grad():
        for k in range(FRAMES):
            if k == 3:
                c.reset_streaming(torch.tensor([False, True, False], device=x.device))
            q = enc(x[k]).clone()
            if g is not None:  # every state lives in its buffer (what a graph replay reads and writes)
                assert all(getattr(st, n) is b for (st, n), b in zip(g._states, g._bufs))  # noqa: SLF001
            codes.append(q)
            wavs.append(dec(q).clone())
    return codes, wavs


def _compare(device: str, graphs: bool) -> None:
    codec = _codec(device)
    x = 0.1 * torch.randn(FRAMES, B, 1, codec.hop_length, generator=torch.Generator().manual_seed(1)).to(device)
    ref_codes, ref_wavs = _stream(codec, x, None)
    codes, wavs = _stream(codec, x, graphs)
    for k in range(FRAMES):
        assert torch.equal(codes[k], ref_codes[k]), k
        assert torch.allclose(wavs[k], ref_wavs[k], atol=1e-5), (k, (wavs[k] - ref_wavs[k]).abs().max())
    assert len(torch.cat(ref_codes).unique()) > 4 and not torch.equal(ref_codes[4][1], ref_codes[4][0])


def test_buffered_states_equal_plain_streaming_across_a_reset() -> None:
    _compare("cpu", graphs=False)


def test_needs_streaming_first() -> None:
    with pytest.raises(RuntimeError, match="start_streaming"):
        GraphedCodec(_codec(), B, graphs=False)


def _clock_runs(device: str) -> list[list]:
    """The frame clock without and with the codec's graphs (on a CPU: the buffered states, no capture): two
    sessions, one joining late."""
    import copy

    from model.generator import SpeechGenerator
    from tests.test_s2s_model import GREEDY, tiny_model
    from voice.engines.clock import FrameClock

    model, codec = tiny_model(), _codec(transformer=0)
    frames = (0.1 * np.random.default_rng(3).standard_normal((8, codec.hop_length))).astype(np.float32)
    outs = []
    for graphs in (False, True):
        gen = SpeechGenerator(copy.deepcopy(model), max_batch=2, max_frames=8, sampling=GREEDY, device=device)
        clock = FrameClock(gen, copy.deepcopy(codec), np.zeros(4, dtype=np.int64), codec_graphs=graphs)
        assert clock.codec_graphed is (graphs and device == "cuda")
        got: list = []
        a = clock.join(got.append)
        for k, f in enumerate(frames):
            if k == 3:
                b = clock.join(got.append)
            clock.push(a, f)
            if k >= 3:
                clock.push(b, frames[k - 3])
            clock.tick()
        outs.append(got)
    return outs


def test_frame_clock_with_the_buffered_codec_equals_without() -> None:
    plain, graphed = _clock_runs("cpu")
    assert [(f.slot, f.text) for f in plain] == [(f.slot, f.text) for f in graphed] and len(plain) == 13
    assert all(np.allclose(a.audio, b.audio, atol=1e-5) for a, b in zip(plain, graphed))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_equal_plain_streaming_across_a_reset() -> None:
    _compare("cuda", graphs=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_frame_clock_with_codec_graphs_equals_eager() -> None:
    plain, graphed = _clock_runs("cuda")
    assert [(f.slot, f.text) for f in plain] == [(f.slot, f.text) for f in graphed] and len(plain) == 13
    assert all(np.allclose(a.audio, b.audio, atol=1e-4) for a, b in zip(plain, graphed))
