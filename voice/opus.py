"""WebRTC's audio payload, as the server's track and the bench client both send it: 20 ms frames of
48 kHz mono s16, Opus-encoded here instead of by aiortc (which upmixes to stereo and encodes in its
thread pool; an `av.Packet` handed to aiortc's sender goes out as it is).

    enc = opus_encoder()
    packets = enc.encode(to_frame(samples_960, k))   # one packet per frame
"""

from __future__ import annotations

import fractions

import numpy as np
from av import AudioFrame, CodecContext

from model.common.audio_constants import WEBRTC_FRAME, WEBRTC_SR

BIT_RATE = 64_000  # mono speech (aiortc's own encoder: 96 kb/s stereo)
TIME_BASE = fractions.Fraction(1, WEBRTC_SR)


def opus_encoder() -> CodecContext:
    """A mono 48 kHz Opus encoder for 20 ms s16 frames (receivers decode mono in a stereo stream)."""
    c = CodecContext.create("libopus", "w")
    c.bit_rate = BIT_RATE
    c.format, c.layout, c.sample_rate, c.time_base = "s16", "mono", WEBRTC_SR, TIME_BASE
    c.options = {"application": "voip"}
    return c


def to_frame(x: np.ndarray, k: int) -> AudioFrame:
    """(960,) float32 -> AudioFrame s16 mono 48 kHz with pts k*960."""
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(1, -1)
    f = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = WEBRTC_SR, k * WEBRTC_FRAME, TIME_BASE
    return f
