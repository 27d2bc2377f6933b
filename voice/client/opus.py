"""Opus packets for the client's microphone, encoded once per utterance per process.

Every session of a bench step sends the same few questions. aiortc's sender packs an `av.Packet`
as it is (no encoder, no thread-pool hop), so `UtterancePlayer` hands it packets from this cache:
an utterance is encoded once (mono, 20 ms frames, a fresh encoder) and each session reuses its
packets; idle frames reuse one packet of digital silence. The decoded audio is what a live
encoder would send, delayed by the same encoder look-ahead (6.5 ms): the utterance is encoded
with one silent frame after it, so its tail is flushed into its last packet.

    packets = OpusPackets()
    frames = packets.utterance(audio_48k)   # list[bytes], one per 20 ms frame
    packets.silence                         # bytes: one silent frame
"""

from __future__ import annotations

import hashlib

import numpy as np

from model.common.audio_constants import WEBRTC_FRAME
from voice.opus import primed_encoder, silence_packet, to_frame


def encode(audio: np.ndarray) -> list[bytes]:
    """(T,) float32 at 48 kHz -> one Opus packet per 20 ms frame (the last frame zero-padded),
    plus one frame of silence that flushes the encoder's look-ahead."""
    n = -(-len(audio) // WEBRTC_FRAME) + 1
    x = np.zeros(n * WEBRTC_FRAME, np.float32)
    x[: len(audio)] = audio
    enc, out = primed_encoder(), []  # the receiver decoded silence packets before (see voice/opus.py)
    for k in range(n):
        out += [bytes(p) for p in enc.encode(to_frame(x[k * WEBRTC_FRAME : (k + 1) * WEBRTC_FRAME], k))]
    out += [bytes(p) for p in enc.encode(None)]  # drain
    return out[:n]


class OpusPackets:
    """A per-process cache of encoded utterances (keyed by their samples)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, list[bytes]] = {}
        self.silence = silence_packet()

    def utterance(self, audio: np.ndarray) -> list[bytes]:
        a = np.ascontiguousarray(audio, dtype=np.float32)
        key = hashlib.blake2b(a.tobytes(), digest_size=16).digest()
        if key not in self._cache:
            self._cache[key] = encode(a)
        return self._cache[key]


_SHARED: OpusPackets | None = None


def shared() -> OpusPackets:
    """The process's cache (made on first use)."""
    global _SHARED  # noqa: PLW0603 - one cache per process, made lazily (no work at import)
    if _SHARED is None:
        _SHARED = OpusPackets()
    return _SHARED
