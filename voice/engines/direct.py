"""The direct engine: codec encoder stream -> speech model (batched generator) -> codec decoder.

    parley serve --engine direct

Every session listens continuously: ``feed`` cuts the user's 16 kHz audio into 80 ms frames,
the session's own streaming codec encoder turns each into K codes, and the shared generator
(one static batch, one slot per session; steps of sessions that are ready together are batched
by one stepper thread) advances that session by one frame. What the model says meanwhile is
decoded and kept for a few seconds: when the VAD ends the user's turn, ``respond`` first plays
what the model already started to say after the end of the user's speech (a direct model may
start before the VAD decides), then keeps generating with the codec's silence frames as the
user's input (half duplex, as in training: the agent does not hear its own echo), until the
model has been quiet for ``end_silence_s`` after speaking, or ``max_reply_s``.

Barge-in, echo guard and turn taking are the server's (same as the cascade). The model's
context keeps everything it generated, also what a barge-in cut (``commit`` is informational).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from voice.engines.base import AgentAudio, AgentText, Engine, EngineEvent, EngineSession, Stage, UserTurn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectConfig:
    weights: str | None = None  # speech-model weights (default weights/s2s)
    codec: str | None = None  # codec weights (default weights/codec)
    gguf: str | None = None  # SmolLM2 GGUF (default: the bundled one)
    device: str | None = None  # cpu / cuda (default: cuda when present)
    max_sessions: int = 4  # generator slots (static batch)
    max_frames: int = 2048  # sliding context window per session (164 s)
    max_reply_s: float = 15.0
    end_silence_s: float = 0.8  # quiet this long after speaking: the reply is over
    start_timeout_s: float = 4.0  # no speech this long after the turn: give up
    speech_rms: float = 0.02  # a decoded frame louder than this counts as speech
    keep_s: float = 4.0  # model output kept while listening


class _Stepper:
    """One thread runs the generator; concurrent requests of several sessions become one step."""

    def __init__(self, gen) -> None:
        self.gen = gen
        self.lock = threading.Lock()  # guards the generator (join/leave/step)
        self.cv = threading.Condition()
        self.pending: dict[int, tuple[np.ndarray, concurrent.futures.Future]] = {}
        self.thread = threading.Thread(target=self._run, name="direct-stepper", daemon=True)
        self.thread.start()

    def step(self, slot: int, frame: np.ndarray):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self.cv:
            self.pending[slot] = (frame, fut)
            self.cv.notify()
        return fut.result()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.pending:
                    self.cv.wait()
                batch, self.pending = self.pending, {}
            try:
                with self.lock:
                    outs = self.gen.step({s: f for s, (f, _) in batch.items()})
                for s, (_, fut) in batch.items():
                    fut.set_result(outs[s])
            except Exception as e:  # noqa: BLE001 - handed to every waiting session
                for _, fut in batch.values():
                    if not fut.done():
                        fut.set_exception(e)


class DirectEngine(Engine):
    name = "direct"

    def __init__(self, cfg: DirectConfig = DirectConfig(), *, model=None, codec=None, detokenize=None) -> None:
        import torch

        from model.generator import SpeechGenerator

        self.cfg = cfg
        dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if model is None:
            from model.speech_ckpt import DEFAULT_DIR, load_speech_model

            model = load_speech_model(cfg.weights or DEFAULT_DIR, gguf_path=cfg.gguf, device=dev)
            from model.lora import merge_lora

            merge_lora(model.backbone)
        if codec is None:
            from codec import load_codec

            codec = load_codec(cfg.codec)
        if detokenize is None:
            from model.gguf import load_tokenizer

            tok = load_tokenizer(cfg.gguf)
            detokenize = tok.decode
        self.model, self.codec, self.detokenize = model, codec.cpu().eval(), detokenize
        self.layout = model.cfg.layout
        self.hop = codec.hop_length
        self.sample_rate = codec.sample_rate
        with torch.no_grad():
            sil = codec.encode(torch.zeros(1, self.hop * 4))  # (1, K, 4)
        self.silence = sil[0, : self.layout.n_q, -1].numpy()
        self.gen = SpeechGenerator(model, max_batch=cfg.max_sessions, max_frames=cfg.max_frames, device=dev)
        self.stepper = _Stepper(self.gen)

    def info(self) -> dict:
        return {"engine": self.name, "sessions": self.cfg.max_sessions, "device": str(self.gen.device),
                "frame_ms": 1000 * self.hop / self.sample_rate}

    def session(self) -> "DirectSession":
        with self.stepper.lock:
            slot = self.gen.join()
        return DirectSession(self, slot)

    def _leave(self, slot: int) -> None:
        with self.stepper.lock:
            self.gen.leave(slot)


@dataclass
class _Said:
    t: float  # time of the user frame that produced it (end of that frame)
    audio: np.ndarray  # (hop,) float32 at 16 kHz
    text: int  # text token (PAD when silent)


class DirectSession(EngineSession):
    def __init__(self, engine: DirectEngine, slot: int) -> None:
        from model.layout import Undelayer

        self.e, self.slot = engine, slot
        self.codec = copy.deepcopy(engine.codec)  # own streaming state (encoder + decoder)
        self.codec.start_streaming(1)
        self.undelay = Undelayer(engine.layout)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"direct-{slot}")
        self.buf = np.zeros(0, dtype=np.float32)
        self.responding = False
        n_keep = int(engine.cfg.keep_s * engine.sample_rate / engine.hop)
        self.said: collections.deque[_Said] = collections.deque(maxlen=n_keep)
        self.closed = False

    # --- one frame (worker thread) ----------------------------------------------------------
    def _frame(self, user_audio: np.ndarray | None, t: float) -> _Said:
        import torch

        with torch.no_grad():
            if user_audio is None:
                codes = self.e.silence
            else:
                codes = self.codec.encode(torch.from_numpy(user_audio)[None])[0, : self.e.layout.n_q, 0].numpy()
            out = self.e.stepper.step(self.slot, codes)
            frame = self.undelay.push(out.audio)
            if frame is None:
                audio = np.zeros(self.e.hop, dtype=np.float32)
            else:
                audio = self.codec.decode(torch.from_numpy(frame)[None, :, None])[0, 0].float().numpy()
        return _Said(t, audio, out.text)

    def feed(self, chunk_16k: np.ndarray, t: float) -> None:
        if self.responding or self.closed:
            return
        self.buf = np.concatenate([self.buf, np.asarray(chunk_16k, dtype=np.float32)])
        while len(self.buf) >= self.e.hop:
            x, self.buf = self.buf[: self.e.hop], self.buf[self.e.hop :]
            fut = self.pool.submit(self._frame, x, t)
            fut.add_done_callback(lambda f: self.said.append(f.result()) if not f.exception() else None)

    # --- a reply --------------------------------------------------------------------------
    async def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        cfg, sr, hop = self.e.cfg, self.e.sample_rate, self.e.hop
        loop = asyncio.get_running_loop()
        self.responding = True
        self.buf = np.zeros(0, dtype=np.float32)
        frame_s = hop / sr
        try:
            await loop.run_in_executor(self.pool, lambda: None)  # frames already queued are done
            backlog = [s for s in self.said if s.t >= turn.t_speech_end]
            self.said.clear()
            started, quiet, n = False, 0, 0
            t_first = None
            max_frames = int(cfg.max_reply_s / frame_s)
            pending_text: list[int] = []
            while n < max_frames:
                said = backlog.pop(0) if backlog else await loop.run_in_executor(self.pool, self._frame, None, time.monotonic())
                n += 1
                loud = float(np.sqrt(np.mean(said.audio**2))) > cfg.speech_rms
                if said.text < self.e.layout.text_card:
                    pending_text.append(said.text)
                if not started:
                    if not loud:
                        if n * frame_s > cfg.start_timeout_s:
                            break
                        continue
                    started = True
                    t_first = time.monotonic()
                    yield Stage("engine", 1000 * (t_first - turn.t_decided))
                quiet = 0 if loud else quiet + 1
                text = self.e.detokenize(pending_text) if pending_text else ""
                pending_text = []
                if text:
                    yield AgentText(text)
                yield AgentAudio(said.audio, sr, text)
                if quiet * frame_s >= cfg.end_silence_s:
                    break
        finally:
            self.responding = False

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        log.debug("direct session %d turn %d: played %r (interrupted=%s)", self.slot, turn, played_text, interrupted)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.e._leave(self.slot)


def create(cfg: DirectConfig) -> DirectEngine:
    """The direct engine; weights load in the constructor."""
    return DirectEngine(cfg)
