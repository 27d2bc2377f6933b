"""Named codec variants: a codec config plus the training choices that go with it.

Issue "Codec v2" asks for each lever to be decided by a measured side-by-side run; a variant is
one arm of such a run (`parley codec train --variant NAME`, `parley codec sweep`). The v2 lever
arms are at 2.2 kbps (<= 2.2 kbps target) so that only the lever differs; one arm measures the
bitrate trade-off:

  name             frames   codebooks      kbps  lever
  v1               12.5 Hz   8 x 2048      1.1   the landed v1 (reference)
  12.5hz-16q       12.5 Hz  16 x 2048      2.2   frame rate (vs 25hz)
  25hz             25 Hz     8 x 2048      2.2   frame rate (vs 12.5hz-16q)
  25hz-sem         25 Hz     8 x 2048      2.2   + Whisper distillation into codebook 1
  25hz-sem-bypass  25 Hz     8 x 2048      2.2   + decoder sees unquantized latents half the time
  25hz-sem-tf      25 Hz     8 x 2048      2.2   + causal transformers (2 layers) instead of LSTMs
  25hz-16q-sem-bypass  25 Hz  16 x 2048    4.4   the bitrate trade-off (issue: <= 6 kbps when 2.2
                                                 misses the targets); warm-starts from 25hz-sem-bypass
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from codec.model import CodecConfig

R25 = (8, 5, 4, 4)  # hop 640: 25 Hz frames at 16 kHz
WHISPER_TINY_DIM = 384  # width of the Whisper tiny.en encoder (the semantic teacher)


@dataclass(frozen=True)
class Variant:
    codec: CodecConfig
    bypass_p: float = 0.0  # TrainConfig.bypass_p
    note: str = ""


VARIANTS: dict[str, Variant] = {
    "v1": Variant(CodecConfig(), note="landed v1: 12.5 Hz, 8 x 2048"),
    "12.5hz-16q": Variant(CodecConfig(n_q=16), note="12.5 Hz, 16 x 2048"),
    "25hz": Variant(CodecConfig(ratios=R25), note="25 Hz, 8 x 2048"),
    "25hz-sem": Variant(CodecConfig(ratios=R25, semantic_dim=WHISPER_TINY_DIM),
                        note="25 Hz + Whisper distillation"),
    "25hz-sem-bypass": Variant(CodecConfig(ratios=R25, semantic_dim=WHISPER_TINY_DIM), bypass_p=0.5,
                               note="25 Hz + distillation + unquantized decoder input 50%"),
    "25hz-sem-tf": Variant(CodecConfig(ratios=R25, semantic_dim=WHISPER_TINY_DIM, lstm=0, transformer=2),
                           bypass_p=0.5, note="25 Hz + distillation + bypass + transformer bottleneck"),
    "25hz-16q-sem-bypass": Variant(CodecConfig(ratios=R25, semantic_dim=WHISPER_TINY_DIM, n_q=16), bypass_p=0.5,
                                   note="25hz-sem-bypass with 16 codebooks: 4.4 kbps (bitrate trade-off)"),
}

TINY = CodecConfig(ratios=(2, 2, 2, 2), n_filters=4, dimension=8, lstm=1, n_q=2, bins=16)


def get_variant(name: str, tiny: bool = False) -> Variant:
    """The named variant; `tiny` shrinks the network (CPU tests) but keeps the lever."""
    if name not in VARIANTS:
        raise KeyError(f"unknown codec variant {name!r}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[name]
    if tiny:
        c = v.codec
        ratios = (2, 4, 4, 10) if c.semantic_dim else (2, 2, 2, 2)  # the teacher needs hop % 320 == 0
        v = replace(v, codec=replace(TINY, ratios=ratios, semantic_dim=c.semantic_dim, n_q=max(1, c.n_q // 4),
                                     lstm=min(c.lstm, 1), transformer=min(c.transformer, 1), context=8))
    return v
