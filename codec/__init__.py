"""Parley's streaming neural speech codec (16 kHz, 12.5 Hz frames, 8 x 2048 RVQ, 1.1 kbps).

    from codec import load_codec
    codec = load_codec()                      # weights/codec/, eval mode, CPU
    codes = codec.encode(wav_16k)             # (B, T) or (B, 1, T) float -> (B, 8, frames) int64
    wav = codec.decode(codes)                 # (B, K<=8, frames) -> (B, 1, frames * 1280)
    with codec.streaming(batch_size=1):       # chunk by chunk (multiples of 1280 samples / frames)
        c = codec.encode(chunk); y = codec.decode(c)
        codec.reset_streaming(mask)           # restart some rows of the batch

Importing this package is cheap: torch is imported on first use of these names.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_codec", "ParleyCodec", "CodecConfig", "SAMPLE_RATE", "HOP", "FRAME_RATE",
           "read_pcodes", "write_pcodes"]

_WHERE = {"load_codec": "codec.io", "read_pcodes": "codec.io", "write_pcodes": "codec.io",
          "ParleyCodec": "codec.model", "CodecConfig": "codec.model", "SAMPLE_RATE": "codec.model",
          "HOP": "codec.model", "FRAME_RATE": "codec.model"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")
