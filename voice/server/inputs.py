"""The input side of a session: Opus packets passed on as they arrive, frames -> 16 kHz VAD chunks, batched VAD."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import numpy as np
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from model.common.audio_constants import SPEECH_SR, VAD_CHUNK


class OpusPassThrough(JitterBuffer):
    """A jitter buffer that hands each audio packet on as it arrives. aiortc's (even with prefetch 0)
    knows a frame is complete only when the next packet, with a new timestamp, arrives: every frame
    waits one packet (20 ms). One WebRTC Opus packet is one whole frame, and the server is not a
    player: a packet older than one already handed on is dropped (it cannot be decoded in order);
    a lost one is skipped."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self.next_seq: int | None = None
        self.dropped = 0  # late packets

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self.next_seq is not None and uint16_add(seq, -self.next_seq) >= 0x8000:
            self.dropped += 1
            return False, None
        self.next_seq = uint16_add(seq, 1)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # noqa: SLF001


def pass_packets_through(receiver) -> bool:  # noqa: ANN001
    """Swap an audio RTCRtpReceiver's jitter buffer for an `OpusPassThrough` (before packets arrive).
    Returns False when aiortc's internals differ (nothing changed)."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    old = getattr(receiver, attr, None)
    if not isinstance(old, JitterBuffer) or getattr(old, "_origin", 0) is not None:
        return False
    setattr(receiver, attr, OpusPassThrough())
    return True


def last_packet_age(pc) -> float | None:  # noqa: ANN001 - RTCPeerConnection
    """Seconds since the newest RTP packet of the connection's audio arrived (aiortc notes each
    source's arrival as it handles the packet, before its decoder thread); None: none yet."""
    from aiortc import clock  # noqa: PLC0415

    newest = [s.timestamp for r in pc.getReceivers() if r.track is not None and r.track.kind == "audio"
              for s in r.getSynchronizationSources()]
    return (clock.current_datetime() - max(newest)).total_seconds() if newest else None


class VadBatcher:
    """One Silero step for the chunks of all sessions that are waiting (shared weights, one
    ONNX call per batch, in the VAD thread): with many sessions the VAD costs one call per
    32 ms instead of one per session. Chunks pushed while a batch runs go into the next one."""

    def __init__(self, vad, pool: Executor, max_batch: int = 256) -> None:  # noqa: ANN001
        self.vad = vad
        self.pool = pool
        self.max_batch = max_batch
        self._pending: list[tuple[object, np.ndarray, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.batches = 0  # for tests and stats
        self.steps = 0

    async def push(self, stream, chunk: np.ndarray) -> float:  # noqa: ANN001 - model.components.vad.VADStream
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((stream, chunk, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="parley-vad-batch")
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch: list = []
            seen: set[int] = set()
            rest: list = []
            for item in self._pending:  # a stream's chunks are sequential: one per batch
                if id(item[0]) in seen or len(batch) >= self.max_batch:
                    rest.append(item)
                else:
                    seen.add(id(item[0]))
                    batch.append(item)
            self._pending = rest
            states = [st.state for st, _, _ in batch]
            chunks = np.stack([c for _, c, _ in batch])  # (B, 512)
            try:
                probs = await loop.run_in_executor(self.pool, self.vad.step, states, chunks)
            except Exception as e:  # noqa: BLE001 - every waiting session gets the error
                for _, _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.steps += len(batch)
            for (_, _, f), p in zip(batch, probs):
                if not f.done():
                    f.set_result(float(p))


def frame_to_mono(frame) -> np.ndarray:  # noqa: ANN001 - av.AudioFrame
    """Decoded av.AudioFrame (s16/flt, packed/planar, any channels) -> (T,) float32."""
    a = frame.to_ndarray()
    scale = 1.0 / 32768.0 if np.issubdtype(a.dtype, np.integer) else 1.0
    ch = len(frame.layout.channels)
    a = a.reshape(ch, -1).mean(axis=0) if frame.format.is_planar else a.reshape(-1, ch).mean(axis=1)
    return (a * scale).astype(np.float32)


class SpeechChunker:
    """Decoded frames (any rate, any layout) -> 16 kHz mono chunks of `VAD_CHUNK` samples (soxr, streaming)."""

    def __init__(self) -> None:
        self._rs = None
        self._sr = 0
        self._buf = np.zeros(0, np.float32)
        self.last = np.zeros(0, np.float32)  # the last frame at 16 kHz (its level times onsets)

    def push(self, frame) -> list[np.ndarray]:  # noqa: ANN001 - av.AudioFrame
        """The chunks this frame completes (usually 0 or 1 for a 20 ms frame)."""
        import soxr  # noqa: PLC0415

        if frame.sample_rate != self._sr:
            self._sr = frame.sample_rate
            self._rs = soxr.ResampleStream(self._sr, SPEECH_SR, 1, dtype="float32")
        self.last = self._rs.resample_chunk(frame_to_mono(frame))
        buf = np.concatenate([self._buf, self.last])
        n = len(buf) // VAD_CHUNK
        self._buf = buf[n * VAD_CHUNK :]
        return [np.ascontiguousarray(buf[i * VAD_CHUNK : (i + 1) * VAD_CHUNK]) for i in range(n)]
