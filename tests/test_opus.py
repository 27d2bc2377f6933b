"""Opus as both sides send it (voice/opus.py, voice/client/opus.py): silence as one cached packet, speech
after it on a primed encoder, decoded at full level from its first frame."""

from __future__ import annotations

import av
import numpy as np

from model.common.audio_constants import WEBRTC_FRAME
from voice.client.opus import OpusPackets, encode
from voice.opus import opus_encoder, silence_packet, to_frame


def _peaks(packets: list[bytes]) -> list[float]:
    dec = av.CodecContext.create("libopus", "r")
    dec.format, dec.layout, dec.sample_rate = "s16", "mono", 48000
    return [float(np.abs(f.to_ndarray()).max()) / 32767 for p in packets for f in dec.decode(av.Packet(p))]


def _tone(frames: int) -> np.ndarray:
    t = np.arange(WEBRTC_FRAME * frames) / WEBRTC_FRAME
    return (0.3 * np.sin(2 * np.pi * 8 * t)).astype(np.float32)  # 400 Hz


def test_an_utterance_after_silence_packets_decodes_at_full_level() -> None:
    """The bench client's microphone: silence packets, then an utterance encoded on its own. A fresh
    encoder's first packets fade in over ~120 ms after silence (what the client sent before: the server's VAD
    heard every onset late); the primed encoder's do not."""
    tone = _tone(10)
    peaks = _peaks([silence_packet()] * 10 + encode(tone))[10:]
    assert len(peaks) == 11 and all(0.2 < x < 0.4 for x in peaks), peaks  # (the last: the look-ahead's tail)
    enc = opus_encoder()  # unprimed: the fade this avoids
    frames = [tone[k * WEBRTC_FRAME:(k + 1) * WEBRTC_FRAME] for k in range(10)]
    fresh = [bytes(p) for k, x in enumerate(frames) for p in enc.encode(to_frame(x, k))]
    faded = _peaks([silence_packet()] * 10 + fresh)[10:]
    assert faded[0] < 0.05 and faded[1] < 0.15, faded
    assert OpusPackets().silence == silence_packet() and _peaks([silence_packet()] * 3) == [0.0] * 3
