"""One WebRTC connection: input audio -> VAD turn taking -> engine -> output track + events.

Per session: the peer connection, a `VADStream` (shared Silero weights), the `TurnDetector` with its `EchoGuard`
(from the offer's echo hint), the `AgentTrack`, the `EngineSession` (history) and tasks: the input reader and
its watchdog, the reply of the current turn, a connect timeout. No model work on the event loop: VAD steps of
all sessions are batched (`VadBatcher`) on a one-thread executor; engines use their own pools.

Barge-in: while the agent talks, a possible start of speech (`SoundOnset`: a sound the echo guard cannot explain;
then STARTING) holds the output track (silent frames, nothing consumed); if it was noise (SoundGone, TurnCancel)
the agent resumes where it stopped. When the detector confirms user speech (TurnStart), `_interrupt` flushes the
output track at once (the next 20 ms frame is silent), cancels the reply task (the engine stops its pending
LLM/TTS work) and commits only what was played. Input: each Opus packet goes on as it arrives (`inputs.OpusPassThrough`; aiortc waits 4-5 packets).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from aiortc.mediastreams import MediaStreamError

from model.common.audio_constants import VAD_CHUNK_S, WEBRTC_FRAME_S, WEBRTC_SR
from voice.engines.base import AgentAudio, AgentText, EndOfTurn, Engine, EngineSession, Stage, UserText, UserTurn
from voice.tasks import cancel_and_wait, spawn
from voice.server import events as ev
from voice.server.inputs import SpeechChunker, VadBatcher, last_packet_age
from voice.server.tracks import AgentTrack, Segment, played_text
from voice.server.echo_guard import EchoGuard, EchoHint, level_db
from voice.server.turns import (SoundGone, SoundOnset, TurnCancel, TurnConfig, TurnDetector, TurnEnd, TurnPause,
                                TurnPhase, TurnStart, VadChange)

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 200  # events kept until the data channel opens
TRAILING_S = 0.25  # audio kept after the end of speech in the turn given to the engine


class Session:
    def __init__(
        self,
        pc,  # noqa: ANN001 - aiortc RTCPeerConnection
        engine: Engine,
        vad,  # noqa: ANN001 - model.components.vad.SileroVAD (shared)
        vad_batcher: VadBatcher,
        cfg: TurnConfig = TurnConfig(),
        on_closed: Callable[["Session"], None] | None = None,
        connect_timeout_s: float = 30.0,
        input_timeout_s: float = 0.5,
        engine_session: EngineSession | None = None,  # opened by the caller (default: engine.session())
        echo_hint: EchoHint = EchoHint.UNKNOWN,  # the client's echo path (the offer's "echo_hint")
    ) -> None:
        self.id = secrets.token_hex(4)
        self.pc = pc
        self.engine = engine
        self.cfg = cfg
        self.vad_stream = vad.stream()
        self.vad_batcher = vad_batcher
        self.engine_session = engine_session if engine_session is not None else engine.session()
        self.guard = EchoGuard(cfg, echo_hint)
        self.out = AgentTrack(on_sent=self.guard.note_output)
        self._speculative = getattr(self.engine_session, "speculative", False)
        det_cfg = replace(cfg, stop_ms=cfg.semantic_stop_ms) if self._speculative else replace(cfg, pause_ms=0.0)
        self.detector = TurnDetector(det_cfg, self.guard)
        self._spec: asyncio.Task | None = None  # a speculative reply started at a silence, held
        self._spec_gate: asyncio.Event | None = None  # set when its turn really ends (play it)
        self._spec_done = self._spec_paused = False  # its score said "done" / the pause was reached
        self._spec_turn = 0
        self._decided: dict[int, float] = {}  # turn -> when it ended (speculative replies)
        self.on_closed = on_closed
        self.connect_timeout_s = connect_timeout_s
        self.input_timeout_s = input_timeout_s  # no input frame this long: the client is gone
        self._last_input: float | None = None
        self.t0 = time.monotonic()
        self.turn = 0
        self.closed = False
        self._channel = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING_EVENTS)
        self._tasks: set[asyncio.Task] = set()
        self._reply: asyncio.Task | None = None
        self._reply_turn = 0
        self._segments: dict[int, list[Segment]] = {}
        self._finished: set[int] = set()
        keep = cfg.chunks(cfg.preroll_ms + cfg.start_ms + cfg.start_gap_ms) + 4
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=keep)  # QUIET/STARTING
        self._turn_audio: list[tuple[float, np.ndarray]] = []  # SPEAKING/STOPPING
        self._in_turn = False
        self._held_at: float | None = None  # when the output was held for a possible barge-in
        self.stats = {"chunks": 0, "turns": 0, "barge_ins": 0, "input_late": 0}
        self._wire()

    # -- wiring ------------------------------------------------------------------------------
    def _spawn(self, coro, name: str) -> asyncio.Task:  # noqa: ANN001
        return spawn(self._tasks, coro, f"parley-{self.id}-{name}")

    def _wire(self) -> None:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:  # noqa: ANN001
            if self._channel is None:
                self._channel = channel
                if channel.readyState == "open":
                    self._flush_pending()
                else:
                    channel.on("open", self._flush_pending)

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            if track.kind == "audio":
                self._spawn(self._read_input(track), "input")

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(f"connection {pc.connectionState}")  # the peer hung up, or ICE / DTLS failed

    def start(self) -> None:
        """Called once the answer is ready (on the event loop)."""
        self.send(ev.READY, session=self.id, echo_hint=self.guard.hint.value, **self.engine.info())
        self._spawn(self._connect_watchdog(), "watchdog")

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if self.pc.connectionState != "connected":
            log.info("session %s: not connected after %.0f s, closing", self.id, self.connect_timeout_s)
            self._spawn(self.close(), "close")

    # -- events ------------------------------------------------------------------------------
    def send(self, type_: str, **fields: object) -> None:
        msg = json.dumps({"type": type_, **fields, "t": round(1000 * (time.monotonic() - self.t0), 1)})
        ch = self._channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(msg)
            except Exception:  # noqa: BLE001 - a closing channel must not break the session
                log.debug("session %s: event dropped", self.id)
        elif not self.closed:
            self._pending.append(msg)

    def _flush_pending(self) -> None:
        while self._pending and self._channel is not None and self._channel.readyState == "open":
            self._channel.send(self._pending.popleft())

    # -- input -------------------------------------------------------------------------------
    async def _read_input(self, track) -> None:  # noqa: ANN001
        chunker = SpeechChunker()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            t = time.monotonic()
            if self._last_input is None and self.input_timeout_s > 0:
                self._spawn(self._input_watchdog(), "input-watchdog")
            self._last_input = t
            chunks = chunker.push(frame)
            for e in self.detector.sound(level_db(chunker.last), t):  # an onset, before its chunk is complete
                self._on_turn_event(e)
            for chunk in chunks:
                await self._on_chunk(chunk, t)
        log.debug("session %s: input track ended", self.id)

    async def _input_watchdog(self, period: float = 0.1) -> None:
        """Close the session when its client stops sending audio (vanished without a goodbye: ICE
        consent would take ~30 s). Not when we are the slow side: after a late wake-up (busy event
        loop) or while its RTP packets still arrive (frames late in decoding: `input_late`)."""
        while not self.closed:
            t = time.monotonic()
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - t > period + 0.2 or self._last_input is None or now - self._last_input <= self.input_timeout_s:
                continue
            if (age := last_packet_age(self.pc)) is not None and age <= self.input_timeout_s:
                self.stats["input_late"] += 1
            else:
                log.info("session %s: no input for %.1f s, closing", self.id, now - self._last_input)
                self._spawn(self.close(), "close")
                return

    async def _on_chunk(self, chunk: np.ndarray, t: float) -> None:
        prob = await self.vad_batcher.push(self.vad_stream, chunk)
        self.stats["chunks"] += 1
        self.engine_session.feed(chunk, t)
        if self._in_turn:
            self._turn_audio.append((t, chunk))
        else:
            self._recent.append((t, chunk))
        for e in self.detector.push(prob, level_db(chunk), t):
            self._on_turn_event(e)

    def _on_turn_event(self, e) -> None:  # noqa: ANN001
        if isinstance(e, VadChange):
            if e.state is TurnPhase.SPEAKING:
                self._discard_spec()  # the user went on after the pause (if a reply was started)
            if e.state is TurnPhase.STOPPING and self._speculative and self._in_turn:
                self._start_spec(e.t)
            self.send(ev.VAD, state=e.state.value)
        if isinstance(e, SoundOnset) or (isinstance(e, VadChange) and e.state is TurnPhase.STARTING):
            self._hold(e.t)
        if isinstance(e, TurnStart):
            self._on_turn_start(e)
        elif isinstance(e, TurnEnd):
            self._on_turn_end(e)
        elif isinstance(e, TurnPause):
            self._on_pause(e)
        elif isinstance(e, (TurnCancel, SoundGone)):
            if self.out.paused:  # it was noise: the agent goes on where it stopped
                self.out.resume()
                self._held_at = None

    def _hold(self, t: float) -> None:
        """Maybe an interruption: hold the agent's audio while the VAD decides."""
        if self.cfg.hold_on_start and self.replying and not self.out.paused:
            self.out.pause()
            self._held_at = t

    def _on_turn_start(self, e: TurnStart) -> None:
        barge_in = self.replying
        if barge_in:
            self._interrupt(e.t)
        elif self.out.paused:
            self.out.resume()
        self.turn += 1
        self.stats["turns"] += 1
        lo = e.t_speech_start - self.cfg.preroll_ms / 1000.0
        self._turn_audio = [(t, c) for t, c in self._recent if t > lo]
        self._recent.clear()
        self._in_turn = True
        self.send(ev.TURN_START, turn=self.turn, barge_in=barge_in)

    def _start_spec(self, t: float) -> None:
        """Speculative start at the first silent chunk: the reply runs, held until the turn ends."""
        self._discard_spec()
        audio = np.concatenate([c for _, c in self._turn_audio])
        ut = UserTurn(self.turn, audio, self.detector.t_speech_end, t, final=False)
        self._spec_gate, self._spec_turn = asyncio.Event(), self.turn
        self._spec_done = self._spec_paused = False
        self._spec = self._spawn(self._run_reply(ut, self._spec_gate), f"spec{self.turn}")

    def _on_pause(self, e: TurnPause) -> None:
        """pause_ms of silence: the turn ends now if the speculative reply's score said so."""
        self._spec_paused = True
        if self._spec_done:
            self._end_turn_now()

    def _end_turn_now(self) -> None:
        for e in self.detector.force_end(time.monotonic()):  # ends the turn (if still in a pause)
            self._on_turn_event(e)

    def _discard_spec(self) -> None:
        """Throw the held speculative reply away: never played, forgotten by the engine."""
        if self._spec is None:
            return
        self._spec.cancel()  # no-op when done
        self.engine_session.discard(self._spec_turn)
        self._segments.pop(self._spec_turn, None)
        self._spec = self._spec_gate = None

    def _on_turn_end(self, e: TurnEnd) -> None:
        if self._spec is not None and self._spec_turn == self.turn and not self._spec.done():
            self._in_turn, self._turn_audio = False, []  # the speculative reply answers this turn: play it
            self.send(ev.TURN_END, turn=self.turn, speech_ms=round(1000 * e.speech_s))
            self._decided[self.turn] = e.t
            self._reply_turn, self._reply = self.turn, self._spec
            self._spec_gate.set()
            self._spec = self._spec_gate = None
            return
        self._discard_spec()
        self._in_turn = False
        hi = e.t_speech_end + TRAILING_S + VAD_CHUNK_S
        chunks = [c for t, c in self._turn_audio if t <= hi]
        self._turn_audio = []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        self.send(ev.TURN_END, turn=self.turn, speech_ms=round(1000 * e.speech_s))
        ut = UserTurn(self.turn, audio, e.t_speech_end, e.t)
        self._reply_turn = self.turn
        self._reply = self._spawn(self._run_reply(ut), f"reply{self.turn}")

    # -- replies -----------------------------------------------------------------------------
    @property
    def replying(self) -> bool:
        return (self._reply is not None and not self._reply.done()) or self.out.busy

    async def _run_reply(self, ut: UserTurn, gate: asyncio.Event | None = None) -> None:
        """One reply; with a `gate` (speculative) everything but stages waits until it is set."""
        segs = self._segments.setdefault(ut.turn, [])
        stages: dict[str, float] = {}
        heard: UserText | None = None
        first = True
        agen = self.engine_session.respond(ut)
        try:
            async for item in agen:
                if isinstance(item, EndOfTurn):
                    thr = item.threshold if self.cfg.eot_threshold is None else self.cfg.eot_threshold
                    if gate is not None and gate is self._spec_gate and item.prob >= thr:
                        self._spec_done = True  # the turn ends at the pause (now if it was reached)
                        if self._spec_paused:
                            self._end_turn_now()
                    continue
                if gate is not None and not gate.is_set() and isinstance(item, UserText):
                    heard = item  # sent once the turn is really over
                    continue
                if gate is not None and not gate.is_set() and not isinstance(item, Stage):
                    await gate.wait()
                if heard is not None:
                    self.send(ev.USER_TRANSCRIPT, turn=ut.turn, text=heard.text)
                    heard = None
                if isinstance(item, AgentAudio):
                    x = item.audio
                    if item.sample_rate != WEBRTC_SR:
                        from model.audio import resample  # noqa: PLC0415

                        x = resample(x, item.sample_rate, WEBRTC_SR)
                    segs.append(self.out.enqueue(ut.turn, x, item.text))
                    if first:
                        first = False
                        self.out.streaming = ut.turn  # from now on a frame it cannot fill is a gap
                        decided = self._decided.pop(ut.turn, ut.t_decided)
                        stages = {"vad_endpoint_ms": round(1000 * (decided - ut.t_speech_end), 1), **stages}
                        if not ut.final:
                            stages["speculative_ms"] = round(1000 * (decided - ut.t_decided), 1)
                        total = 1000 * (time.monotonic() - ut.t_speech_end)
                        self.send(ev.LATENCY, turn=ut.turn, total_ms=round(total, 1), stages=stages)
                elif isinstance(item, AgentText):
                    self.send(ev.AGENT_TEXT, turn=ut.turn, text=item.text)
                elif isinstance(item, UserText):
                    self.send(ev.USER_TRANSCRIPT, turn=ut.turn, text=item.text)
                elif isinstance(item, Stage):
                    stages[f"{item.name}_ms"] = round(item.ms, 1)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one failed turn must not end the session
            log.exception("session %s: engine failed on turn %d", self.id, ut.turn)
            self.send(ev.ERROR, turn=ut.turn, message=f"engine failed: {e}")
        finally:
            await agen.aclose()
            if self.out.streaming == ut.turn:
                self.out.streaming = None
        if gate is not None:
            await gate.wait()  # a speculative reply that said nothing still waits for its turn
            if heard is not None:
                self.send(ev.USER_TRANSCRIPT, turn=ut.turn, text=heard.text)
        while any(not s.done for s in segs):
            await self.out.idle.wait()
            await asyncio.sleep(0)
        self._finish(ut.turn, interrupted=False)

    def _finish(self, turn: int, interrupted: bool) -> None:
        if turn in self._finished:
            return
        self._finished.add(turn)
        segs = self._segments.pop(turn, [])
        text = played_text(segs)
        played_ms = round(1000 * sum(s.sent for s in segs) / WEBRTC_SR)
        gap_ms = round(1000 * WEBRTC_FRAME_S * self.out.gap_frames(turn))
        self.engine_session.commit(turn, text, interrupted)
        self.send(ev.AGENT_DONE, turn=turn, text=text, interrupted=interrupted, played_ms=played_ms, gap_ms=gap_ms)

    def _interrupt(self, t_decided: float) -> None:
        """Barge-in: silence the output now, cancel the reply, keep what was played."""
        self.out.flush()
        self.out.resume()
        stop_ms = 1000 * (time.monotonic() - t_decided)
        held_ms = None if self._held_at is None else round(1000 * (t_decided - self._held_at), 1)
        self._held_at = None
        turn = self._reply_turn
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        segs = self._segments.get(turn, [])
        played_ms = round(1000 * sum(s.sent for s in segs) / WEBRTC_SR)
        self.stats["barge_ins"] += 1
        self.send(ev.BARGE_IN, turn=turn, played_ms=played_ms, stop_ms=round(stop_ms, 2), held_ms=held_ms)
        self._finish(turn, interrupted=True)

    # -- teardown ----------------------------------------------------------------------------
    async def close(self, why: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        await cancel_and_wait(list(self._tasks))
        self.out.stop()
        try:
            await self.engine_session.close()
        except Exception:  # noqa: BLE001
            log.exception("session %s: engine session close failed", self.id)
        await self.pc.close()
        self._pending.clear()
        self._segments.clear()
        self._channel = None
        if self.on_closed is not None:
            self.on_closed(self)
        log.info("session %s closed%s %s", self.id, f" ({why})" if why else "", self.stats)  # input_late > 0: came late
