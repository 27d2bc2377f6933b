"""Streaming == full pass (down to one frame), causality and state reset, for the codec's
encoder, quantizer and decoder (random small model, and the trained default weights)."""

from __future__ import annotations

import pytest
import torch

from codec.model import CodecConfig, ParleyCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, lstm=1, n_q=4, bins=64)
# transformer bottleneck with a 5-frame window: the 24-frame tests cross the window's edge
SMALL_TF = CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, lstm=0, transformer=2, context=5,
                       n_q=4, bins=64)


@pytest.fixture(scope="module", params=[SMALL, SMALL_TF], ids=["lstm", "transformer"])
def small(request: pytest.FixtureRequest) -> ParleyCodec:
    torch.manual_seed(0)
    m = ParleyCodec(request.param).eval()
    if request.param.transformer:  # layer scale starts at 0.01: make the layers matter
        for layer in m.modules():
            if hasattr(layer, "ls1"):
                torch.nn.init.ones_(layer.ls1)
                torch.nn.init.ones_(layer.ls2)
    with torch.no_grad():
        m.quantizer.init_kmeans(m.encode_latent(torch.randn(4, 1, SMALL.hop_length * 64) * 0.3))
    return m


@pytest.fixture(scope="module")
def trained() -> ParleyCodec:
    from codec.io import load_codec

    return load_codec()


def _audio(m: ParleyCodec, batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, frames * m.hop_length, generator=g) * 0.2


def _stream_encode(m: ParleyCodec, x: torch.Tensor, chunk_frames: list[int]) -> torch.Tensor:
    out, pos, i = [], 0, 0
    with m.streaming(x.shape[0]):
        while pos < x.shape[-1]:
            n = chunk_frames[i % len(chunk_frames)] * m.hop_length
            out.append(m.encode(x[..., pos : pos + n]))
            pos += n
            i += 1
    return torch.cat(out, -1)


def _stream_decode(m: ParleyCodec, codes: torch.Tensor, chunk_frames: list[int]) -> torch.Tensor:
    out, pos, i = [], 0, 0
    with m.streaming(codes.shape[0]):
        while pos < codes.shape[-1]:
            n = chunk_frames[i % len(chunk_frames)]
            out.append(m.decode(codes[..., pos : pos + n]))
            pos += n
            i += 1
    return torch.cat(out, -1)


@pytest.mark.parametrize("chunks", [[1], [3], [1, 2, 5], [24]])
def test_streaming_equals_full_small(small: ParleyCodec, chunks: list[int]) -> None:
    x = _audio(small, 2, 24)
    with torch.no_grad():
        codes = small.encode(x)
        y = small.decode(codes)
        assert codes.shape == (2, small.cfg.n_q, 24)
        assert torch.equal(_stream_encode(small, x, chunks), codes)
        ys = _stream_decode(small, codes, chunks)
    assert ys.shape == y.shape == x.shape
    torch.testing.assert_close(ys, y, atol=1e-5, rtol=1e-4)


def test_streaming_equals_full_trained(trained: ParleyCodec) -> None:
    x = _audio(trained, 1, 12) * 0.5
    with torch.no_grad():
        codes = trained.encode(x)
        y = trained.decode(codes)
        assert torch.equal(_stream_encode(trained, x, [1]), codes)
        ys = _stream_decode(trained, codes, [1])
    torch.testing.assert_close(ys, y, atol=1e-5, rtol=1e-4)


def test_causality(small: ParleyCodec) -> None:
    """Changing audio from frame k on never changes earlier codes; changing codes from frame k on
    never changes earlier audio."""
    x = _audio(small, 1, 16)
    k = 9
    x2 = x.clone()
    x2[..., k * small.hop_length :] = torch.randn_like(x2[..., k * small.hop_length :])
    with torch.no_grad():
        c1, c2 = small.encode(x), small.encode(x2)
        assert torch.equal(c1[..., :k], c2[..., :k])
        assert not torch.equal(c1[..., k:], c2[..., k:])
        c3 = c1.clone()
        c3[..., k:] = (c3[..., k:] + 7) % SMALL.bins
        y1, y3 = small.decode(c1), small.decode(c3)
    cut = k * small.hop_length
    assert torch.equal(y1[..., :cut], y3[..., :cut])
    assert not torch.allclose(y1[..., cut:], y3[..., cut:])


def test_reset_one_row(small: ParleyCodec) -> None:
    """reset_streaming(mask) restarts only the masked rows of a batch."""
    a, b = _audio(small, 2, 6, seed=2), _audio(small, 2, 6, seed=3)
    hop = small.hop_length
    with torch.no_grad(), small.streaming(2):
        for i in range(6):
            small.encode(a[..., i * hop : (i + 1) * hop])
        small.reset_streaming(torch.tensor([True, False]))
        got = torch.cat([small.encode(b[..., i * hop : (i + 1) * hop]) for i in range(6)], -1)
    with torch.no_grad():
        fresh = small.encode(b[:1])  # row 0 restarted: same as a new stream
        cont = small.encode(torch.cat([a[1:], b[1:]], -1))[..., 6:]  # row 1 continued
    assert torch.equal(got[:1], fresh)
    assert torch.equal(got[1:], cont)


def test_streaming_rejects_partial_frames(small: ParleyCodec) -> None:
    with small.streaming(1), pytest.raises(ValueError, match="multiple of"):
        small.encode(torch.zeros(1, 1, small.hop_length + 3))


def test_default_config(trained: ParleyCodec) -> None:
    """The shipped weights: codec v2, 25 Hz, 8 x 2048 = 2.2 kbps (issue 10: <= 2.2 kbps)."""
    c = trained.cfg
    assert (c.sample_rate, c.hop_length, c.frame_rate, c.n_q, c.bins) == (16000, 640, 25.0, 8, 2048)
    assert abs(c.kbps - 2.2) < 1e-9 and c.semantic_dim == 384 and c.causal  # variant 25hz-sem-bypass
