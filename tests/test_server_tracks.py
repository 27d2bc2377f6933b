"""The agent's output track: real-time pacing, pause / flush, the Opus packets aiortc sends, gaps
counted while a reply streams, and the words the user heard."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from model.common.audio_constants import WEBRTC_FRAME
from voice.opus import silence_packet
from voice.server.tracks import AgentTrack, Segment, played_text


def test_played_text_truncates_at_words() -> None:
    a = Segment(1, "The capital of France is Paris.", np.zeros(1000, np.float32), sent=1000)
    b = Segment(1, "It is a lovely city to visit.", np.zeros(1000, np.float32), sent=500)
    c = Segment(1, "Anything else?", np.zeros(1000, np.float32), sent=0)
    assert played_text([a, b, c]) == "The capital of France is Paris. It is a"
    assert played_text([Segment(1, "one two", np.zeros(10, np.float32))]) == ""


def test_track_paces_frames_and_flush_silences_the_next_frame() -> None:
    async def main() -> None:
        tr = AgentTrack()
        tone = np.full(WEBRTC_FRAME * 50, 0.5, np.float32)
        seg = tr.enqueue(1, tone, "a b c d")
        t0 = time.monotonic()
        frames = [await tr.next_samples() for _ in range(10)]
        dt = time.monotonic() - t0
        assert 0.15 <= dt <= 0.35, dt  # 10 frames of 20 ms, real time (the first is immediate)
        assert all(np.abs(f).min() == 0.5 for f in frames)
        assert seg.sent == 10 * WEBRTC_FRAME and tr.busy
        tr.pause()  # held: silent frames, nothing consumed
        held = [await tr.next_samples() for _ in range(3)]
        assert all(np.abs(f).max() == 0 for f in held) and seg.sent == 10 * WEBRTC_FRAME
        tr.resume()
        assert np.abs(await tr.next_samples()).min() == 0.5 and seg.sent == 11 * WEBRTC_FRAME
        tr.flush()
        nxt = await tr.next_samples()
        assert np.abs(nxt).max() == 0  # within one frame of the flush
        assert tr.idle.is_set() and not tr.busy
        tr.stop()

    asyncio.run(main())


def test_track_sends_opus_packets_on_the_rtp_clock() -> None:
    """recv() hands aiortc mono Opus packets, pts k * 960 from 0, that decode to what was queued."""
    import av  # noqa: PLC0415

    async def main() -> list:
        tr = AgentTrack()
        t = np.arange(WEBRTC_FRAME * 20) / WEBRTC_FRAME
        tone = (0.3 * np.sin(2 * np.pi * 8 * t)).astype(np.float32)  # 400 Hz
        tr.enqueue(1, tone)
        packets = [await tr.recv() for _ in range(25)]
        tr.enqueue(2, tone[: WEBRTC_FRAME * 10])  # after silence: a fresh encoder
        packets += [await tr.recv() for _ in range(12)]
        tr.stop()
        return packets

    packets = asyncio.run(main())
    assert [p.pts for p in packets] == [k * WEBRTC_FRAME for k in range(37)]
    dec = av.CodecContext.create("libopus", "r")
    dec.format, dec.layout, dec.sample_rate = "s16", "mono", 48000
    peaks = [np.abs(f.to_ndarray()).max() / 32767 for p in packets for f in dec.decode(p)]
    assert len(peaks) == 37
    assert all(0.2 < x < 0.4 for x in peaks[1:20]), peaks  # the tone (the first frame: encoder warm-up)
    assert max(peaks[21:25]) < 0.01, peaks  # silence after it (the encoder's 6.5 ms tail is in frame 20)
    assert all(bytes(p) == silence_packet() for p in packets[21:25])  # silence after its first frame: one packet
    assert bytes(packets[20]) != silence_packet()
    assert all(0.2 < x < 0.4 for x in peaks[26:35]), peaks  # the second tone, decoded as well as the first
    assert max(peaks[36:]) < 0.01, peaks


def test_agent_track_counts_gaps_only_while_a_reply_streams() -> None:
    """A frame the queue cannot fill while the session marks the turn as streaming is a gap (the engine
    fell behind real time) once more of the reply follows; not the silence after its last piece while
    the engine finishes, not after the reply ended, not after a barge-in's flush."""

    async def main() -> None:
        tr = AgentTrack()
        tr.streaming = 2
        tr.enqueue(2, np.full(WEBRTC_FRAME * 3 // 2, 0.5, np.float32))  # 1.5 frames of speech
        for _ in range(3):  # full, half (gap), empty (gap)
            await tr.recv()
        assert tr.starved == {}  # not yet: this may have been the reply's end
        tr.enqueue(2, np.full(WEBRTC_FRAME, 0.5, np.float32))  # the engine caught up
        assert tr.starved == {2: 2}
        for _ in range(4):  # the piece, then silence while the engine finishes (no more audio)
            await tr.recv()
        tr.streaming = None  # the reply's generator ended: the silence after it is no gap
        await tr.recv()
        assert tr.gap_frames(2) == 2 and tr.gap_frames(2) == 0
        tr.streaming = 3
        await tr.recv()
        tr.flush()  # barge-in
        tr.enqueue(3, np.full(WEBRTC_FRAME, 0.5, np.float32))
        await tr.recv()
        assert tr.gap_frames(3) == 0 and tr.streaming is None
        tr.stop()

    asyncio.run(main())


def test_input_packets_go_on_as_they_arrive() -> None:
    """The server's input buffer hands each Opus packet on at once (aiortc's waits for the next one):
    in order, a lost one skipped, a late one dropped; and it replaces the buffer of a real receiver."""
    from aiortc import RTCPeerConnection  # noqa: PLC0415
    from aiortc.rtp import RtpPacket  # noqa: PLC0415

    from voice.server.inputs import OpusPassThrough, pass_packets_through  # noqa: PLC0415

    def pkt(seq: int) -> RtpPacket:
        p = RtpPacket(sequence_number=seq % 65536, timestamp=seq * 960 % 2**32)
        p._data = bytes([seq % 256])  # noqa: SLF001 - what aiortc's receiver sets
        return p

    jb = OpusPassThrough()
    got = [jb.add(pkt(s))[1] for s in (65534, 65535, 0, 2, 1, 3)]  # wraps, 1 lost then late
    assert [f.data[0] if f else None for f in got] == [254, 255, 0, 2, None, 3]
    assert got[3].timestamp == 2 * 960 and jb.dropped == 1

    async def swap() -> bool:
        pc = RTCPeerConnection()
        t = pc.addTransceiver("audio", direction="recvonly")
        ok = pass_packets_through(t.receiver)
        await pc.close()
        return ok and isinstance(t.receiver._RTCRtpReceiver__jitter_buffer, OpusPassThrough)  # noqa: SLF001

    assert asyncio.run(swap())
