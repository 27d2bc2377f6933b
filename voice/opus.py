"""WebRTC's audio payload, as the server's track and the bench client both send it: 20 ms frames of
48 kHz mono s16, Opus-encoded here instead of by aiortc (which upmixes to stereo and encodes in its
thread pool; an `av.Packet` handed to aiortc's sender goes out as it is).

    enc = opus_encoder()
    packets = enc.encode(to_frame(samples_960, k))   # one packet per frame
    silence_packet()                                  # bytes: a 20 ms frame of digital silence

A silent stretch is sent as the same packet over and over (encoding silence costs as much as speech:
~0.15 ms a frame); the next speech starts on a fresh encoder primed with one silent frame: a fresh
encoder's first packet, decoded after silence packets, fades the speech in over ~120 ms (-26 dB in its
first frame), primed it decodes as it would from an encoder that ran all along (tests/test_server_tracks.py).

    enc = primed_encoder()                            # a fresh encoder that has seen one silent frame
"""

from __future__ import annotations

import fractions
import functools

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


def primed_encoder() -> CodecContext:
    """`opus_encoder()` after one frame of silence (its packet dropped): speech that follows silence
    packets decodes at full level from its first frame (a fresh encoder's fades in over ~120 ms)."""
    c = opus_encoder()
    c.encode(to_frame(np.zeros(WEBRTC_FRAME, np.float32), -1))
    return c


def to_frame(x: np.ndarray, k: int) -> AudioFrame:
    """(960,) float32 -> AudioFrame s16 mono 48 kHz with pts k*960."""
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(1, -1)
    f = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = WEBRTC_SR, k * WEBRTC_FRAME, TIME_BASE
    return f


@functools.cache
def silence_packet() -> bytes:
    """One 20 ms frame of digital silence in steady state (the second silent frame of a fresh encoder)."""
    enc = opus_encoder()
    out = [bytes(p) for k in range(3) for p in enc.encode(to_frame(np.zeros(WEBRTC_FRAME, np.float32), k))]
    return out[1]
