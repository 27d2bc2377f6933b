"""The RVQ as codec v2 trains it: quantizer bypass (the decoder sees unquantized latents for some
items), the straight-through first level the semantic head reads, and bf16 inference."""

from __future__ import annotations

import torch

from codec.model import CodecConfig, ParleyCodec
from codec.quantization import ResidualVectorQuantizer


def _rvq(seed: int = 0) -> tuple[ResidualVectorQuantizer, torch.Tensor]:
    torch.manual_seed(seed)
    q = ResidualVectorQuantizer(dimension=16, n_q=4, bins=32)
    x = torch.randn(6, 16, 20)
    q.init_kmeans(x)
    return q, x


def test_bypass_all_items_passes_latents_through() -> None:
    q, x = _rvq()
    q.train()
    r = q(x, bypass_p=1.0)
    torch.testing.assert_close(r.quantized, x)  # decoder input = the latent itself
    assert r.codes.shape == (6, 4, 20) and float(r.commit_loss) > 0  # codes and commitment still there


def test_no_bypass_is_the_quantized_latent_with_identity_gradient() -> None:
    q, x = _rvq()
    q.train()
    x = x.clone().requires_grad_(True)
    r = q(x, bypass_p=0.0)
    q.eval()
    with torch.no_grad():
        torch.testing.assert_close(r.quantized.detach(), q.decode(r.codes))
    r.quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # straight-through


def test_first_level_is_codebook_one() -> None:
    q, x = _rvq(1)
    q.eval()
    r = q(x)
    one = q.decode(r.codes[:, :1])  # codebook 1 alone
    torch.testing.assert_close(r.first.detach(), one)


def test_bf16_codec_encodes_like_fp32() -> None:
    torch.manual_seed(0)
    m = ParleyCodec(CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, lstm=1, n_q=4, bins=64)).eval()
    wav = torch.randn(2, 1, 32 * 40) * 0.2
    with torch.no_grad():
        m.quantizer.init_kmeans(m.encode_latent(wav))
        lat = m.encode_latent(wav)
        ref = m.quantizer.encode(lat)
        mb = m.to(torch.bfloat16)
        got = mb.quantizer.encode(lat.bfloat16())  # distances are taken in float32 (no dtype error)
        y = mb.decode(got)
    assert y.dtype == torch.bfloat16 and y.shape == wav.shape
    assert (got[:, 0] == ref[:, 0]).float().mean() > 0.9  # level 1 barely moves under bf16 rounding
