"""The codec's classes are EnCodec's architecture and parameter layout: with EnCodec's own
configuration and a random EnCodec state dict (no real checkpoint is available offline), our
model loads it unchanged and gives the same codes and audio as the `encodec` package."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from codec.model import ParleyCodec, encodec_24khz_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def reference():
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # encodec imports it at top
    model_mod = pytest.importorskip("encodec.model")
    torch.manual_seed(0)
    ref = model_mod.EncodecModel._get_model([1.5, 3.0, 6.0, 12.0, 24.0], 24000, 1, causal=True,
                                            model_norm="weight_norm")
    with torch.no_grad():
        for layer in ref.quantizer.vq.layers:  # random codebooks instead of k-means on data
            layer._codebook.inited.fill_(1)
            layer._codebook.embed.normal_()
    return ref.eval()


@pytest.mark.parametrize("length", [24000, 24000 + 123])
def test_same_outputs_as_encodec(reference, length: int) -> None:
    mine = ParleyCodec(encodec_24khz_config()).eval()
    mine.load_state_dict(reference.state_dict(), strict=True)
    assert set(mine.state_dict()) == set(reference.state_dict())
    x = torch.randn(1, 1, length, generator=torch.Generator().manual_seed(3)) * 0.1
    reference.set_target_bandwidth(24.0)
    with torch.no_grad():
        ref_codes = reference.encode(x)[0][0]  # (B, K, T)
        codes = mine.encode(x)
        assert torch.equal(codes, ref_codes)
        ref_y = reference.decode([(ref_codes, None)])
        y = mine.decode(codes)
        torch.testing.assert_close(mine.encode_latent(x)[..., : ref_codes.shape[-1]],
                                   reference.encoder(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[..., : ref_y.shape[-1]], ref_y, atol=1e-5, rtol=1e-4)
