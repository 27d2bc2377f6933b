"""The streaming cascade: Whisper (ASR) -> chat LLM (tokens streamed) -> TTS clause by clause.

    parley serve --engine cascade [--asr tiny.en --llm smollm2 --voice joe]

Per turn (`CascadeSession.respond`):
  1. ASR on the whole user turn (Whisper via faster-whisper int8, encoder on the clip only, in
     the model thread pool);
  2. the LLM streams its reply in a worker thread; every piece is forwarded as AgentText;
  3. as soon as the text holds a finished clause (punctuation + space, >= 3 words; or, with no
     punctuation, 4 words for the first clause and 24 for later ones, cut before a conjunction
     when possible) it is sent to TTS while the LLM keeps generating; each clause's audio is yielded as AgentAudio in
     order, so the first agent audio is ready after the first clause, not the whole reply.
Barge-in closes the generator: the LLM thread sees its stop flag before the next token, queued
clauses are dropped, a clause being synthesized is finished and thrown away.

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
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from model.common.audio_constants import SPEECH_SR
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

_CLAUSE_END = re.compile(r"[.!?;:,]\s")  # a clause is finished once punctuation is followed by space
MIN_CLAUSE_WORDS = 3  # shorter pieces wait for more text (natural prosody)
FIRST_MAX_WORDS = 4  # the first clause is cut here even without punctuation (first audio after ~5 tokens)
SECOND_MAX_WORDS = 8  # the second one too: it must be ready before the short first one has played
MAX_WORDS = 24  # later clauses likewise (TTS of a very long clause delays everything after it)
_BREAK_WORDS = {"and", "but", "or", "so", "because", "which", "that", "when", "while", "with", "to"}


@dataclass(frozen=True)
class CascadeConfig:
    asr: str = "tiny.en"  # Whisper model (bundled tiny.en)
    asr_backend: str = "ct2"  # "ct2": faster-whisper int8 (p50 366 vs 570 ms, see asr_ct2); "torch"
    asr_full_window: bool = False  # ct2: encode the whole 30 s window (default: the clip only, asr_ct2)
    llm: str = "smollm2"  # "smollm2", a .gguf, or an OpenAI-compatible URL
    llm_model: str | None = None  # model name for a URL
    voice: str = "joe"  # TTS voice
    device: str = "cpu"
    system: str | None = None  # system prompt (default: model.components.llm.SPOKEN_SYSTEM_PROMPT)
    max_new_tokens: int = 48  # a spoken reply is short
    temperature: float = 0.0  # greedy: 83 % vs ~70 % at 0.6 on the 24 factual questions (facts.py)
    top_p: float = 0.9
    max_history: int = 24  # messages kept (user + agent); past it the oldest half is dropped
    threads: int = 3  # model thread pool (ASR / LLM / TTS of several sessions)
    speculative: bool = True  # start the reply at the first pause, end the turn on the LLM's score
    eou_head: str | None = None  # end-of-turn head folder (default weights/eou/; absent: the end-token mass)


def trim_silence(audio: np.ndarray, sr: int, tail: bool, keep_s: float = 0.02, floor: float = 0.01) -> np.ndarray:
    """Cut the leading (and, with `tail`, the trailing) near-silence of a clause's audio, keeping
    `keep_s`: the first audio starts sooner, and a clause cut mid-sentence runs into the next."""
    loud = np.flatnonzero(np.abs(audio) > floor)
    if not len(loud):
        return audio
    keep = int(keep_s * sr)
    end = min(len(audio), loud[-1] + keep) if tail else len(audio)
    return audio[max(0, loud[0] - keep):end]


def _forced_cut(buf: str, max_words: int) -> int:
    """Where to cut a long unpunctuated run: before a conjunction in its second half if there
    is one, else before its last (maybe unfinished) word. 0: not long enough yet."""
    spans = [m.span() for m in re.finditer(r"\S+", buf)]
    if len(spans) <= max_words:
        return 0
    words = [buf[a:b].lower().strip(",.;:!?") for a, b in spans]
    for i in range(len(spans) - 1, max(MIN_CLAUSE_WORDS, len(spans) // 2) - 1, -1):
        if words[i] in _BREAK_WORDS:
            return spans[i][0]
    return spans[-1][0]


def take_clauses(buf: str, final: bool = False, max_words: int | None = None) -> tuple[list[str], str]:
    """Split the finished clauses off streamed text: (ready clauses, rest still growing).

    A clause is ready at punctuation followed by a space (>= MIN_CLAUSE_WORDS words); a run of
    more than `max_words` words without one is cut at a conjunction or a word boundary."""
    ends = [m.end() for m in _CLAUSE_END.finditer(buf)]
    cut = len(buf) if final else 0
    if not final:
        for e in reversed(ends):
            if len(buf[:e].split()) >= MIN_CLAUSE_WORDS:
                cut = e
                break
        if max_words is not None:
            cut = cut + _forced_cut(buf[cut:], max_words)
    ready, rest = buf[:cut], buf[cut:]
    if not ready.strip():
        return [], buf
    from model.components.tts import split_clauses  # noqa: PLC0415

    clauses = split_clauses(ready) if re.search(r"\w", ready) else []
    return clauses, rest


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

            tts = load_voice(cfg.voice)
        self.asr, self.llm, self.tts = asr, llm, tts
        self.pool = ThreadPoolExecutor(cfg.threads, thread_name_prefix="parley-model")
        # one lock per model: sessions take turns on each model, stages of different sessions overlap
        self.asr_lock, self.llm_lock, self.tts_lock = threading.Lock(), threading.Lock(), threading.Lock()
        self.eou_lock = threading.Lock()  # end-of-turn scores (the LLM's weights are read-only)
        from model.components.eou_head import EOU_DIR, LogMassScorer, load_eou_scorer  # noqa: PLC0415
        from model.components.llm import LocalChatLLM  # noqa: PLC0415

        # the learned head on the LLM's hidden state; the end-token mass alone if there is no head file
        self.eou = load_eou_scorer(cfg.eou_head or EOU_DIR) if isinstance(llm, LocalChatLLM) else LogMassScorer()
        self.load_s = time.perf_counter() - t0

    def warm_up(self) -> None:
        """First calls are slow (allocations, kernels): make them before the first user does."""
        noise = (0.01 * np.random.default_rng(0).standard_normal(SPEECH_SR)).astype(np.float32)
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

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


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
        text = await loop.run_in_executor(e.pool, e.transcribe, turn.audio)
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
        stop = threading.Event()
        out: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._pipeline(self.messages(), stop, out, t_asr))]
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
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipeline(self, messages: list[dict], stop: threading.Event, out: asyncio.Queue,
                        t_asr: float) -> None:
        """LLM pieces -> AgentText + clauses -> TTS -> AgentAudio, into `out` (None at the end)."""
        e = self.engine
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        clauses: asyncio.Queue = asyncio.Queue()

        def generate() -> None:  # worker thread
            try:
                with e.llm_lock:
                    if stop.is_set():  # cancelled while waiting for another session's reply
                        return
                    kw = {"state": self.llm_state} if self.llm_state is not None else {}
                    for piece in e.llm.stream_chat(messages, max_new_tokens=e.cfg.max_new_tokens,
                                                   temperature=e.cfg.temperature, top_p=e.cfg.top_p, **kw):
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except BaseException as err:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(pieces.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, None)

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

        llm_job = loop.run_in_executor(e.pool, generate)
        try:
            await asyncio.gather(text_stage(), audio_stage())
            await out.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # noqa: BLE001
            await out.put(err)
        finally:
            stop.set()  # the LLM thread stops before its next token; nobody waits for it
            llm_job.add_done_callback(lambda f: f.cancelled() or f.exception())


async def _put_when_done(score: asyncio.Future, threshold: float, out: asyncio.Queue) -> None:
    """The end-of-turn score into the reply's queue, between its other items."""
    await out.put(EndOfTurn(await score, threshold))


def create(cfg: CascadeConfig) -> CascadeEngine:
    """Loads the three models and warms them up."""
    engine = CascadeEngine(cfg)
    engine.warm_up()
    log.info("cascade engine ready in %.1f s", engine.load_s)
    return engine
