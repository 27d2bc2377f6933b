"""One Realtime connection: input audio buffer -> VAD turn taking -> engine -> response events.

The WebRTC sessions' pieces: the shared Silero weights (server's `VadBatcher`), a `TurnDetector`
with its `EchoGuard` (the demo's `TurnConfig` unless `session.update` changes it), one
`EngineSession`. Turns run on the input clock (seconds of audio appended: a client may stream
faster than real time). A confirmed start of speech sends `speech_started` and interrupts the
response being generated or played (playout.py): it ends `cancelled` / `turn_detected`. The end
of the turn commits the user item and starts a response. The engine's history gets a reply as
heard when the next response starts, so a client's `conversation.item.truncate` can decide it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable

import numpy as np

from model.common.audio_constants import SPEECH_SR as VAD_SR
from model.audio import resample
from voice.engines.base import AgentAudio, AgentText, Engine, EngineSession, UserText, UserTurn
from voice.realtime import protocol as p
from voice.realtime.config import Settings, VadSettings, apply_update, render_session, shape_of
from voice.realtime.inbuf import InputBuffer
from voice.realtime.playout import Playout
from voice.realtime.response import (
    AUDIO_DELTA_SAMPLES,
    Response,
    UserAudio,
    render_item,
    render_part,
    render_response,
    user_item,
)
from voice.tasks import cancel_and_wait, spawn
from model.common.audio_constants import VAD_CHUNK_S as CHUNK_S
from voice.server.echo_guard import EchoGuard, level_db
from voice.server.turns import TurnConfig, TurnDetector, TurnEnd, TurnStart

log = logging.getLogger(__name__)

TRAILING_S = 0.25  # audio kept after the end of speech (as voice.session)
MAX_BUFFER_S = 120.0  # uncommitted input kept without server VAD; older audio is dropped
MIN_COMMIT_S = 0.1  # OpenAI refuses to commit less than 100 ms
MAX_RESPONSES_KEPT = 16  # responses remembered for conversation.item.truncate


class RealtimeSession:
    def __init__(self, engine: Engine, vad, vad_batcher, turn: TurnConfig,  # noqa: ANN001
                 send: Callable[[dict], None], dialect: p.Dialect = "ga",
                 on_closed: Callable[["RealtimeSession"], None] | None = None,
                 engine_session: EngineSession | None = None) -> None:
        self.id = secrets.token_hex(4)
        self.sid = p.new_id("sess")
        self.vad_stream = vad.stream()
        self.vad_batcher = vad_batcher
        self.base_turn = turn
        self.dialect = dialect
        self.names = p.Names.of(dialect)
        voice = str(engine.info().get("voice") or engine.name)
        self.settings = Settings(vad=VadSettings.default(turn), voice=voice)
        self.guard = EchoGuard(turn)
        self.detector = TurnDetector(turn, self.guard)
        self.playout = Playout(self.guard.note_output)
        self.engine_session = engine_session if engine_session is not None else engine.session()
        self.send = send
        self.on_closed = on_closed
        self.closed = False
        self.turn = 0
        self.inbuf = InputBuffer()  # its .t is the input clock (seconds of audio received)
        self.stats = {"chunks": 0, "turns": 0, "barge_ins": 0, "responses": 0, "errors": 0}
        self._in_turn = False
        self._turn_item: str | None = None
        self._committed: list[UserAudio] = []
        self._active: Response | None = None
        self._pending: Response | None = None  # done, not yet in the engine's history
        self._by_item: dict[str, Response] = {}
        self._last_item: str | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- plumbing ----------------------------------------------------------------------------
    def emit(self, type_: str, **fields: object) -> None:
        if not self.closed:
            self.send(p.server_event(type_, **fields))

    def error(self, err: p.ProtocolError) -> None:
        self.stats["errors"] += 1
        if not self.closed:
            self.send(p.error_event(err))

    def _spawn(self, coro, name: str) -> asyncio.Task:  # noqa: ANN001
        return spawn(self._tasks, coro, f"parley-rt-{self.id}-{name}")

    def start(self) -> None:
        self.emit("session.created", session=render_session(self.settings, self.dialect, self.sid))

    async def handle(self, ev: p.ClientEvent) -> None:
        """One parsed client event (called in order by the connection's read loop)."""
        try:
            if isinstance(ev, p.AudioAppend):
                await self._append(ev.pcm)
            elif isinstance(ev, p.Unsupported):
                raise p.ProtocolError(p.UNSUPPORTED[ev.type], "unsupported_event", "type", ev.event_id)
            else:
                handler = {p.SessionUpdate: self._update, p.AudioCommit: self._client_commit,
                           p.AudioClear: self._clear, p.ResponseCreate: self._response_create,
                           p.ResponseCancel: self._response_cancel, p.ItemTruncate: self._truncate,
                           p.ItemCreate: self._item_create}[type(ev)]
                handler(ev)
        except p.ProtocolError as e:
            if e.event_id is None:
                e.event_id = ev.event_id
            self.error(e)

    # -- session.update ----------------------------------------------------------------------
    def _update(self, ev: p.SessionUpdate) -> None:
        new = apply_update(self.settings, ev.session, self.base_turn, ev.event_id)
        shape = shape_of(ev.session)  # a client without the beta header but with beta-shaped settings
        if shape is not None and shape != self.dialect and not self.stats["responses"]:
            self.dialect, self.names = shape, p.Names.of(shape)
        if new.vad != self.settings.vad:
            cfg = (new.vad or VadSettings.default(self.base_turn)).turn_config(self.base_turn)
            self.detector = TurnDetector(cfg, self.guard)
            self._in_turn = False
            self._turn_item = None
        self.settings = new
        self.guard.set_hint(new.echo_hint)  # noise_reduction near_field: a headset, little echo
        if hasattr(self.engine_session, "instructions"):  # the cascade appends them to its system prompt
            self.engine_session.instructions = new.instructions
        self.emit("session.updated", session=render_session(new, self.dialect, self.sid))

    # -- input audio -------------------------------------------------------------------------
    async def _append(self, pcm: np.ndarray) -> None:
        for chunk, t in self.inbuf.feed(pcm):
            if not self.closed:
                await self._on_chunk(chunk, t)

    async def _on_chunk(self, chunk: np.ndarray, t: float) -> None:
        self.stats["chunks"] += 1
        self.playout.advance(t)
        self.engine_session.feed(chunk, time.monotonic())
        if self.settings.vad is None:
            self.inbuf.drop_until(t - MAX_BUFFER_S)
            return
        prob = await self.vad_batcher.push(self.vad_stream, chunk)
        if not self._in_turn:
            cfg = self.detector.cfg
            self.inbuf.keep_last(cfg.chunks(cfg.preroll_ms + cfg.start_ms + cfg.start_gap_ms) + 4)
        for e in self.detector.push(prob, level_db(chunk), t):
            if isinstance(e, TurnStart):
                self._on_turn_start(e)
            elif isinstance(e, TurnEnd):
                self._on_turn_end(e)

    def _on_turn_start(self, e: TurnStart) -> None:
        self.stats["turns"] += 1
        lo = e.t_speech_start - self.detector.cfg.preroll_ms / 1000.0
        self.inbuf.drop_until(lo)
        self._in_turn = True
        self._turn_item = p.new_id("item")
        self.emit("input_audio_buffer.speech_started", audio_start_ms=max(0, round(1000 * lo)),
                  item_id=self._turn_item)
        vad = self.settings.vad
        if vad is not None and vad.interrupt_response:
            self._barge_in(e.t)

    def _on_turn_end(self, e: TurnEnd) -> None:
        self._in_turn = False
        audio, t_end = self.inbuf.take(until=e.t_speech_end + TRAILING_S + CHUNK_S, t_end=e.t_speech_end)
        item_id = self._turn_item or p.new_id("item")
        self._turn_item = None
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=round(1000 * e.t_speech_end), item_id=item_id)
        self._commit(audio, item_id, t_end)
        vad = self.settings.vad
        if vad is not None and vad.create_response and self._active is None:
            self._start_response(self.settings.modalities)  # (else answered by the next response)

    def _commit(self, audio: np.ndarray, item_id: str, t_speech_end: float) -> None:
        prev, self._last_item = self._last_item, item_id
        self.emit("input_audio_buffer.committed", item_id=item_id, previous_item_id=prev)
        self._item_added(user_item(item_id), prev)
        self._committed.append(UserAudio(item_id, audio, t_speech_end))

    def _item_added(self, item: dict, prev: str | None, done: bool = True) -> None:
        if self.dialect == "beta":
            self.emit("conversation.item.created", previous_item_id=prev, item=item)
            return
        self.emit("conversation.item.added", previous_item_id=prev, item=item)
        if done:
            self.emit("conversation.item.done", previous_item_id=prev, item=item)

    def _client_commit(self, ev: p.AudioCommit) -> None:
        if self.inbuf.seconds() < MIN_COMMIT_S:
            raise p.ProtocolError(f"buffer too small: {1000 * self.inbuf.seconds():.0f} ms of audio, at least "
                                  f"{1000 * MIN_COMMIT_S:.0f} ms needed", "input_audio_buffer_commit_empty")
        audio, t_end = self.inbuf.take()
        item_id = self._turn_item or p.new_id("item")
        self._reset_turn()
        self._commit(audio, item_id, t_end)

    def _reset_turn(self) -> None:
        self.detector.reset()
        self._in_turn = False
        self._turn_item = None

    def _clear(self, ev: p.AudioClear) -> None:
        self.inbuf.clear()
        self._reset_turn()
        self.emit("input_audio_buffer.cleared")

    def _item_create(self, ev: p.ItemCreate) -> None:
        """User audio items are answered by the next response. Other items (text messages, function
        outputs: clients add their context this way) are acknowledged but not heard by the engines."""
        item = dict(ev.item)
        content = item.get("content") if isinstance(item.get("content"), list) else []
        audio = [c.get("audio") for c in content if isinstance(c, dict) and c.get("type") == "input_audio"]
        pcm = np.concatenate([p.decode_pcm16(a, ev.event_id) for a in audio]) if audio else None
        item_id = item.get("id") if isinstance(item.get("id"), str) else p.new_id("item")
        item.update(id=item_id, object="realtime.item", status="completed")
        prev, self._last_item = self._last_item, item_id
        if pcm is not None and item.get("role") == "user":
            x = resample(pcm.astype(np.float32) / 32768.0, p.REALTIME_SR, VAD_SR)
            self._committed.append(UserAudio(item_id, x, time.monotonic()))
            item = user_item(item_id)
        else:
            log.info("realtime session %s: %s item acknowledged, not given to the engine", self.id,
                     item.get("role") or item.get("type"))
        self._item_added(item, ev.previous_item_id or prev)

    # -- responses ---------------------------------------------------------------------------
    def _response_create(self, ev: p.ResponseCreate) -> None:
        if self._active is not None:
            raise p.ProtocolError(f"conversation already has an active response {self._active.id}",
                                  "conversation_already_has_active_response")
        mods = ev.response.get("output_modalities", ev.response.get("modalities"))
        ok = isinstance(mods, list) and mods and all(m in ("text", "audio") for m in mods)
        self._start_response(tuple(mods) if ok else self.settings.modalities)

    def _start_response(self, modalities: tuple[str, ...]) -> None:
        self._settle_pending()
        users, self._committed = self._committed, []
        self.turn += 1
        self.stats["responses"] += 1
        r = Response(p.new_id("resp"), self.turn, [u.item_id for u in users], modalities)
        self._active = r
        self.emit("response.created", response=render_response(r, self.settings, self.dialect))
        if not users:  # nothing heard to answer (the engines answer speech): an empty response
            self._finish(r, "completed")
            return
        audio = np.concatenate([u.audio for u in users])
        t_end = users[-1].t_speech_end if users else time.monotonic()
        ut = UserTurn(self.turn, audio.astype(np.float32, copy=False), t_end, time.monotonic())
        r.task = self._spawn(self._run(r, ut), f"resp{self.turn}")

    async def _run(self, r: Response, ut: UserTurn) -> None:
        agen = self.engine_session.respond(ut)
        status, reason = "completed", None
        try:
            async for item in agen:
                if isinstance(item, UserText) and r.user_item_ids:
                    self.emit("conversation.item.input_audio_transcription.completed", item_id=r.user_item_ids[-1],
                              content_index=0, transcript=item.text,
                              usage={"type": "duration", "seconds": round(len(ut.audio) / VAD_SR, 3)})
                elif isinstance(item, AgentText):
                    r.generated += item.text
                    if not r.audio_out and item.text:
                        self._output_item(r)
                        self.emit(self.names.text_delta, **self._where(r), delta=item.text)
                elif isinstance(item, AgentAudio) and r.audio_out:
                    self._send_audio(r, item)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one failed response must not end the session
            log.exception("realtime session %s: engine failed on turn %d", self.id, ut.turn)
            status, reason = "failed", f"engine failed: {e}"
        finally:
            await agen.aclose()
        self._finish(r, status, reason)

    def _where(self, r: Response) -> dict[str, object]:
        return {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}

    def _output_item(self, r: Response) -> None:
        if r.item_id is not None:
            return
        r.item_id = p.new_id("item")
        self._by_item[r.item_id] = r
        while len(self._by_item) > MAX_RESPONSES_KEPT:
            self._by_item.pop(next(iter(self._by_item)))
        prev, self._last_item = self._last_item, r.item_id
        item = render_item(r, self.names)
        self.emit("response.output_item.added", response_id=r.id, output_index=0, item=item)
        self._item_added(item, prev, done=False)
        self.emit("response.content_part.added", **self._where(r), part=render_part(r))

    def _send_audio(self, r: Response, a: AgentAudio) -> None:
        x = a.audio if a.sample_rate == p.REALTIME_SR else resample(a.audio, a.sample_rate, p.REALTIME_SR)
        if not len(x):
            return
        self._output_item(r)
        text = a.text.strip()
        if text:
            delta = f" {text}" if r.transcript else text
            r.transcript += delta
            self.emit(self.names.transcript_delta, **self._where(r), delta=delta)
        r.pieces.append(self.playout.add(text, x, self.inbuf.t))
        for i in range(0, len(x), AUDIO_DELTA_SAMPLES):
            self.emit(self.names.audio_delta, **self._where(r), delta=p.encode_pcm16(x[i : i + AUDIO_DELTA_SAMPLES]))

    def _finish(self, r: Response, status: str, reason: str | None = None) -> None:
        if r.status != "in_progress":
            return
        r.status, r.reason = status, reason
        if self._active is r:
            self._active = None
        if r.item_id is not None:
            where = self._where(r)
            if r.audio_out:
                self.emit(self.names.audio_done, **where)
                self.emit(self.names.transcript_done, **where, transcript=r.transcript)
            else:
                self.emit(self.names.text_done, **where, text=r.generated)
            self.emit("response.content_part.done", **where, part=render_part(r))
            item = render_item(r, self.names)
            self.emit("response.output_item.done", response_id=r.id, output_index=0, item=item)
            if self.dialect == "ga":
                self.emit("conversation.item.done", item=item)
        self.emit("response.done", response=render_response(r, self.settings, self.dialect))
        if status == "failed":
            self.error(p.ProtocolError(reason or "engine failed", "engine_error", type_="server_error"))
        self._settle_pending()
        self._pending = r

    def _cancel(self, r: Response, reason: str) -> None:
        if r.task is not None and not r.task.done():
            r.task.cancel()
        self.playout.cut(self.inbuf.t)
        self._finish(r, "cancelled", reason)

    def _barge_in(self, t: float) -> None:
        """A confirmed start of user speech: stop the response and / or its playback."""
        if self._active is not None:
            self.stats["barge_ins"] += 1
            self._cancel(self._active, "turn_detected")
        elif self.playout.playing(t):
            self.stats["barge_ins"] += 1
            self.playout.cut(t)

    def _response_cancel(self, ev: p.ResponseCancel) -> None:
        r = self._active
        if r is None or (ev.response_id is not None and ev.response_id != r.id):
            raise p.ProtocolError("no active response to cancel" if r is None else
                                  f"response {ev.response_id!r} is not the active response",
                                  "response_cancel_not_active", "response_id")
        self._cancel(r, "client_cancelled")

    def _truncate(self, ev: p.ItemTruncate) -> None:
        r = self._by_item.get(ev.item_id)
        if r is None:
            raise p.ProtocolError(f"no assistant item {ev.item_id!r} to truncate", "item_not_found", "item_id")
        r.truncate_ms = min(ev.audio_end_ms, r.audio_ms)  # clients measure with their own clocks: clamp
        self.playout.cut(self.inbuf.t)
        heard, _ = r.heard()
        if r.committed:
            log.debug("realtime session %s: truncate of %s after its history was settled", self.id, r.item_id)
        r.transcript = heard
        self.emit("conversation.item.truncated", item_id=ev.item_id, content_index=ev.content_index,
                  audio_end_ms=r.truncate_ms)

    def _settle_pending(self) -> None:
        """The previous reply goes into the engine's history as heard (once)."""
        r, self._pending = self._pending, None
        if r is None or r.committed:
            return
        r.committed = True
        text, interrupted = r.heard()
        text = re.sub(r"\s+", " ", text).strip()
        self.engine_session.commit(r.turn, text, interrupted)

    # -- teardown ----------------------------------------------------------------------------
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await cancel_and_wait(list(self._tasks))
        try:
            await self.engine_session.close()
        except Exception:  # noqa: BLE001
            log.exception("realtime session %s: engine session close failed", self.id)
        self._committed, self._by_item, self._active, self._pending = [], {}, None, None
        if self.on_closed is not None:
            self.on_closed(self)
        log.info("realtime session %s closed", self.id)
