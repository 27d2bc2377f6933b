"""The streaming cascade: Whisper (ASR) -> chat LLM (tokens streamed) -> TTS clause by clause.

    parley serve --engine cascade [--asr tiny.en --llm smollm2 --voice joe]

Per turn (`CascadeSession.respond`):
  1. ASR on the whole user turn (Whisper via faster-whisper int8, encoder on the clip only, in
     the model thread pool);
  2. the LLM streams its reply in a worker thread; every piece is forwarded as AgentText;
  3. as soon as the text holds a finished clause (punctuation + space, >= 3 words; or, with no
     punctuation, 3 words for the first clause, 8 for the second and 24 for later ones
     (`voice/engines/clauses.py`), cut before a conjunction when possible) it is sent to TTS while the LLM keeps generating; each clause's audio is yielded as AgentAudio in
     order, so the first agent audio is ready after the first clause, not the whole reply.
Barge-in closes the generator: the LLM sees its stop flag before the next token, queued
clauses are dropped, a clause being synthesized is finished and thrown away.

Many sessions: by default each model call takes its turn on a pool thread under the model's lock.
With `batch` (default on CUDA) the ASR requests of all sessions go through one batched Whisper
pass and every reply is a row of one continuous-batching LLM decode loop
(`voice/engines/batching.py`, `model/text_batch.py`); the clause and TTS path is the same.

History (per session): the system prompt, then the user turns and, for the agent, only what
was played (`commit`). Past `max_history` messages the oldest are dropped down to half of it in one
go, so the session's KV cache (`ChatState`: only the new tokens are prefilled) stays valid for
several turns between the rare re-prefills.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from model.common.audio_constants import SPEECH_SR
from model.common.errors import ParleyError
from voice.engines.batching import ASRBatcher, LLMBatcher, ReplyOptions
from voice.engines.clauses import FIRST_MAX_WORDS, MAX_WORDS, SECOND_MAX_WORDS, take_clauses, trim_silence
from voice.engines.speakable import speakable
from voice.engines.base import (
    AgentAudio,
    AgentText,
    EndOfTurn,
    Engine,
    EngineEvent,
    EngineSession,
    Stage,
    UserText,
    UserTurn,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CascadeConfig:
    asr: str = "tiny.en"  # Whisper model (bundled tiny.en)
    asr_backend: str = "ct2"  # "ct2": faster-whisper int8 (p50 366 vs 570 ms, see asr_ct2); "torch"
    asr_full_window: bool = False  # ct2: encode the whole 30 s window (default: the clip only, asr_ct2)
    llm: str = "smollm2"  # "smollm2", a .gguf, or an OpenAI-compatible URL
    llm_model: str | None = None  # model name for a URL
    voice: str = "joe"  # TTS voice
    tts_backend: str = "onnx"  # piper: "onnx" (onnxruntime, CPU) or "torch" (on `device`; voice/SERVING.md run 5)
    device: str = "cpu"
    system: str | None = None  # system prompt (default: model.components.llm.SPOKEN_SYSTEM_PROMPT)
    max_new_tokens: int = 48  # a spoken reply is short
    temperature: float = 0.0  # greedy: 83 % vs ~70 % at 0.6 on the 24 factual questions (facts.py)
    top_p: float = 0.9
    max_history: int = 24  # messages kept (user + agent); past it the oldest half is dropped
    threads: int = 3  # model thread pool (ASR / LLM / TTS of several sessions)
    speculative: bool = True  # start the reply at the first pause, end the turn on the LLM's score
    batch: bool | None = None  # batch ASR and LLM decoding across sessions (None: on for cuda, off on CPU)
    batch_rows: int = 32  # LLM replies decoded together at most (more wait for a free row)
    asr_batch: int = 16  # ASR clips per batched pass at most
    asr_wait_ms: float = 5.0  # after a clip, the ASR batcher waits this long for more
    eou_head: str | None = None  # end-of-turn head folder (default weights/eou/; absent: the end-token mass)

    @property
    def batching(self) -> bool:
        """Cross-session batching on? (2 CPU cores gain nothing from it: measured in README.md)"""
        return str(self.device).startswith("cuda") if self.batch is None else self.batch

    @property
    def tts_device(self) -> str | None:
        """Where a piper voice runs in torch (None: onnxruntime on the CPU)."""
        if self.tts_backend not in ("onnx", "torch"):
            raise ParleyError(f"tts_backend must be onnx or torch, not {self.tts_backend!r}")
        return self.device if self.tts_backend == "torch" else None


class CascadeEngine(Engine):
    name = "cascade"

    def __init__(self, cfg: CascadeConfig = CascadeConfig(), asr=None, llm=None, tts=None) -> None:  # noqa: ANN001
        from model.components.llm import SPOKEN_EXAMPLES, SPOKEN_SYSTEM_PROMPT  # noqa: PLC0415

        self.cfg = cfg
        self.system = cfg.system or SPOKEN_SYSTEM_PROMPT
        self.examples = [] if cfg.system else list(SPOKEN_EXAMPLES)  # a custom prompt goes alone
        self.prefix_state = None  # KV cache of system prompt + examples, copied into each session
        t0 = time.perf_counter()
        if asr is None:
            from model.components.asr_ct2 import load_asr  # noqa: PLC0415

            asr = load_asr(cfg.asr, device=cfg.device, backend=cfg.asr_backend,
                           short_window=not cfg.asr_full_window)
        if llm is None:
            from model.components.llm import load_llm  # noqa: PLC0415

            llm = load_llm(cfg.llm, model=cfg.llm_model, device=cfg.device)
        if tts is None:
            from model.components.tts import load_voice  # noqa: PLC0415

            tts = load_voice(cfg.voice, device=cfg.tts_device)
        self.asr, self.llm, self.tts = asr, llm, tts
        self.pool = ThreadPoolExecutor(cfg.threads, thread_name_prefix="parley-model")
        # one lock per model: sessions take turns on each model, stages of different sessions overlap
        self.asr_lock, self.llm_lock, self.tts_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self.eou_lock = threading.Lock()  # end-of-turn scores (the LLM's weights are read-only)
        from model.components.eou_head import EOU_DIR, LogMassScorer, load_eou_scorer  # noqa: PLC0415
        from model.components.llm import LocalChatLLM  # noqa: PLC0415

        # the learned head on the LLM's hidden state; the end-token mass alone if there is no head file
        self.eou = load_eou_scorer(cfg.eou_head or EOU_DIR) if isinstance(llm, LocalChatLLM) else LogMassScorer()
        self.asr_batcher: ASRBatcher | None = None  # cross-session batching (voice/engines/batching.py)
        self.llm_batcher: LLMBatcher | None = None
        if cfg.batching:
            self.asr_batcher = ASRBatcher(asr, cfg.asr_batch, cfg.asr_wait_ms / 1000)
            if isinstance(llm, LocalChatLLM):  # a URL backend batches on its own server
                self.llm_batcher = LLMBatcher(llm, cfg.batch_rows)
        self.load_s = time.perf_counter() - t0

    def warm_up(self) -> None:
        """First calls are slow (allocations, kernels): make them before the first user does."""
        noise = (0.01 * np.random.default_rng(0).standard_normal(SPEECH_SR)).astype(np.float32)
        if hasattr(self.asr, "prepare"):  # torch Whisper on a GPU: its graphs at every batch size, now
            self.asr.prepare()
        self.transcribe(noise)
        for _ in self.llm.stream_chat([{"role": "user", "content": "Hi"}], max_new_tokens=2):
            pass
        if hasattr(self.llm, "new_state"):  # prefill the fixed start of every conversation once
            state = self.llm.new_state()
            if state is not None:
                for _ in self.llm.stream_chat([{"role": "system", "content": self.system}, *self.examples],
                                              max_new_tokens=1, temperature=0.0, state=state):
                    pass
                self.prefix_state = state
        if self.asr_batcher is not None:  # the batched paths' first calls too
            self.asr_batcher.submit(noise).result()
        if self.llm_batcher is not None:
            self.llm_batcher.submit([{"role": "user", "content": "Hi"}], ReplyOptions(2), lambda p: None).done.wait()
        self.synthesize("Hello there, friend.")

    def info(self) -> dict:
        return {"engine": self.name, "asr": self.cfg.asr, "llm": self.cfg.llm, "voice": self.cfg.voice}

    def session(self) -> "CascadeSession":
        return CascadeSession(self)

    # model calls (worker threads)
    def transcribe(self, audio_16k: np.ndarray) -> str:
        with self.asr_lock:
            return self.asr.transcribe(audio_16k).strip()

    def synthesize(self, text: str) -> np.ndarray:
        with self.tts_lock:
            return self.tts.synthesize(text)

    async def transcribe_async(self, audio_16k: np.ndarray) -> str:
        """The user's words: one request of a batched ASR pass, or a pool thread taking its turn."""
        if self.asr_batcher is not None:
            return await asyncio.wrap_future(self.asr_batcher.submit(audio_16k))
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.transcribe, audio_16k)

    def start_reply(self, messages: list[dict], state: object | None,
                    emit: Callable[[object], None]) -> Callable[[], None]:
        """Generate a reply: ``emit`` gets its text pieces, then None (after the error on a
        failure), from a worker thread. Returns ``cancel`` (barge-in: no token after the next).
        Batched: a row of the LLM batcher's decode loop; else a pool thread under the LLM lock."""
        cfg = self.cfg
        if self.llm_batcher is not None:
            opts = ReplyOptions(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
            return self.llm_batcher.submit(messages, opts, emit, state).cancel
        stop = threading.Event()

        def generate() -> None:  # worker thread
            try:
                with self.llm_lock:
                    if stop.is_set():  # cancelled while waiting for another session's reply
                        return
                    kw = {"state": state} if state is not None else {}
                    for piece in self.llm.stream_chat(messages, max_new_tokens=cfg.max_new_tokens,
                                                      temperature=cfg.temperature, top_p=cfg.top_p, **kw):
                        if stop.is_set():
                            break
                        emit(piece)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                emit(err)
            finally:
                emit(None)

        self.pool.submit(generate)
        return stop.set

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for b in (self.asr_batcher, self.llm_batcher):
            if b is not None:
                await asyncio.to_thread(b.close)


class CascadeSession(EngineSession):
    def __init__(self, engine: CascadeEngine) -> None:
        self.engine = engine
        # speculative start needs the end-of-turn score of a local LLM (model.components.eou)
        from model.components.llm import LocalChatLLM  # noqa: PLC0415

        self.speculative = engine.cfg.speculative and isinstance(engine.llm, LocalChatLLM)
        self.history: list[dict] = []
        self._undo: dict[int, int] = {}  # turn -> history length before its user message
        self.first = 0  # index of the oldest message sent to the LLM (moves in jumps, see messages)
        if engine.prefix_state is not None:
            self.llm_state = engine.prefix_state.fork()
        else:
            self.llm_state = engine.llm.new_state() if hasattr(engine.llm, "new_state") else None
        self.instructions = ""  # per-session addition to the system prompt (Realtime session.update)

    def messages(self) -> list[dict]:
        system = f"{self.engine.system}\n{self.instructions}".strip()
        keep = self.engine.cfg.max_history
        if len(self.history) - self.first > keep:
            self.first = len(self.history) - max(1, keep // 2)  # one re-prefill every keep/2 messages
            while self.first < len(self.history) - 1 and self.history[self.first]["role"] != "user":
                self.first += 1
        return [{"role": "system", "content": system}, *self.engine.examples, *self.history[self.first :]]

    def discard(self, turn: int) -> None:
        n = self._undo.pop(turn, None)
        if n is not None:
            del self.history[n:]

    def end_of_turn(self, text: str) -> float:  # worker thread
        """P(the user's turn is over | text, the agent's last reply): `engine.eou` (one LLM forward)."""
        last = next((m["content"] for m in reversed(self.history) if m["role"] == "assistant"), None)
        with self.engine.eou_lock:  # not llm_lock: the score runs while the reply is generated
            return self.engine.eou.score(self.engine.llm, text, context=last)

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        self._undo.pop(turn, None)
        if played_text.strip():
            self.history.append({"role": "assistant", "content": played_text.strip()})

    async def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        e = self.engine
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        text = await e.transcribe_async(turn.audio)
        t_asr = time.monotonic()
        yield Stage("asr", 1000 * (t_asr - t0))
        yield UserText(text)
        # speculative, at a pause: is the user done? The score runs beside the reply (its own
        # lock, the other core), so it is off the path to the first audio.
        score = None if turn.final else loop.run_in_executor(e.pool, self.end_of_turn, text)
        thr = e.eou.threshold
        if not re.search(r"\w", text):
            if score is not None:
                yield EndOfTurn(await score, thr)
            return  # noise: nothing to answer
        self._undo[turn.turn] = len(self.history)
        self.history.append({"role": "user", "content": text})
        out: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._pipeline(self.messages(), out, t_asr))]
        if score is not None:
            tasks.append(asyncio.ensure_future(_put_when_done(score, thr, out)))
        held: list[EngineEvent] | None = None if score is None else []  # reply items before the score
        try:
            while (item := await out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if held is not None and not isinstance(item, (Stage, EndOfTurn)):
                    held.append(item)  # the server waits for the turn's end on these: score first
                    continue
                yield item
                if isinstance(item, EndOfTurn) and held is not None:
                    for h in held:
                        yield h
                    held = None
            if held is not None:  # the reply was done before its score
                yield EndOfTurn(await score, thr)
                for h in held:
                    yield h
        finally:
            for t in tasks:  # the pipeline cancels its reply (the LLM stops before its next token)
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipeline(self, messages: list[dict], out: asyncio.Queue, t_asr: float) -> None:
        """LLM pieces -> AgentText + clauses -> TTS -> AgentAudio, into `out` (None at the end)."""
        e = self.engine
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        clauses: asyncio.Queue = asyncio.Queue()
        t_first: list[float] = []

        async def text_stage() -> None:
            buf = ""
            n_clauses = 0
            while (p := await pieces.get()) is not None:
                if isinstance(p, BaseException):
                    raise p
                if not t_first:
                    t_first.append(time.monotonic())
                    await out.put(Stage("llm_first_token", 1000 * (t_first[0] - t_asr)))
                await out.put(AgentText(p))
                buf += p
                limit = (FIRST_MAX_WORDS, SECOND_MAX_WORDS)[n_clauses] if n_clauses < 2 else MAX_WORDS
                ready, buf = take_clauses(buf, max_words=limit)
                n_clauses += len(ready)
                for c in ready:
                    await clauses.put(c)
            ready, _ = take_clauses(buf, final=True)
            for c in ready:
                await clauses.put(c)
            await clauses.put(None)

        async def audio_stage() -> None:
            first = True
            while (c := await clauses.get()) is not None:
                c = speakable(c)  # no markdown, links or emoji read aloud
                if not re.search(r"\w", c):
                    continue
                audio = await loop.run_in_executor(e.pool, e.synthesize, c)
                audio = trim_silence(audio, e.tts.sample_rate, tail=c.rstrip()[-1:] not in ".!?;:,")
                if first:
                    first = False
                    t = t_first[0] if t_first else t_asr
                    await out.put(Stage("tts_first_audio", 1000 * (time.monotonic() - t)))
                await out.put(AgentAudio(audio, e.tts.sample_rate, c))

        cancel = e.start_reply(messages, self.llm_state, lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p))
        try:
            await asyncio.gather(text_stage(), audio_stage())
            await out.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # noqa: BLE001
            await out.put(err)
        finally:
            cancel()  # the LLM stops before its next token; nobody waits for it


async def _put_when_done(score: asyncio.Future, threshold: float, out: asyncio.Queue) -> None:
    """The end-of-turn score into the reply's queue, between its other items."""
    await out.put(EndOfTurn(await score, threshold))


def create(cfg: CascadeConfig) -> CascadeEngine:
    """Loads the three models and warms them up."""
    engine = CascadeEngine(cfg)
    engine.warm_up()
    log.info("cascade engine ready in %.1f s", engine.load_s)
    return engine
