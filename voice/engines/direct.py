"""The direct engine: codec encoder -> speech model -> codec decoder, one frame clock for all.

    parley serve --engine direct

Every session listens continuously: ``feed`` cuts the user's 16 kHz audio into codec frames (40 ms with codec v2) and
hands them to the engine's ``FrameClock`` (voice/engines/clock.py), which every frame period runs
ONE batched streaming codec encode, ONE generator step and ONE batched codec decode for all
sessions (one slot each; no per-session model or codec copy). What the model says meanwhile is
kept for a few seconds: when the VAD ends the user's turn, ``respond`` first plays what the model
already started to say after the end of the user's speech (a direct model may start before the
VAD decides), then the session is muted (the codec's silence codes as the user's input: half
duplex, as in training, so the agent does not hear its own echo) and the reply streams at the
clock's pace until the model has been quiet for ``end_silence_s`` after speaking, or
``max_reply_s``.

Barge-in, echo guard and turn taking are the server's (same as the cascade). The model's
context (a ring of ``max_frames``) keeps everything it generated, also what a barge-in cut. With
``semantic_turns`` the sessions are speculative: at a pause ``respond(final=False)`` first asks the
engine's ``TurnJudge`` (Whisper + the end-of-turn head, voice/engines/turn_judge.py) whether the
user is done, so the server can end the turn at the pause instead of after stop_ms of silence.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from voice.engines.base import (AgentAudio, AgentText, EndOfTurn, Engine, EngineEvent, EngineSession, Stage,
                                UserText, UserTurn)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DirectConfig:
    weights: str | None = None  # speech-model weights (default weights/s2s); "random": random init
    codec: str | None = None  # codec weights (default weights/codec)
    fast_codec: bool = True  # on CPU, stream the codec through codec.fast (ONNX Runtime, 1 thread)
    gguf: str | None = None  # SmolLM2 GGUF (default: the bundled one)
    device: str | None = None  # cpu / cuda (default: cuda when present)
    dtype: str = "bfloat16"  # the speech model's (exact step); bf16 on this 2-core CPU: 36.6 ms per frame vs 58.3 fp32
    cpu_step: str = "quant"  # on CPU (model.cpu_step.CpuStep): quant (fused, int4/int8 weights, ~18 ms per
    # frame here), fast (fused, bf16), exact (the reference modules in `dtype`); ignored on CUDA
    cpu_threads: int = 1  # torch threads on CPU (process-wide): the other core stays with WebRTC/Opus/VAD
    max_sessions: int = 4  # generator slots (static batch)
    max_frames: int = 2048  # sliding context window per session (164 s)
    max_reply_s: float = 15.0
    end_silence_s: float = 0.8  # quiet this long after speaking: the reply is over
    start_timeout_s: float = 4.0  # no speech this long after the turn: give up
    speech_rms: float = 0.02  # a decoded frame louder than this counts as speech
    keep_s: float = 4.0  # model output kept while listening
    semantic_turns: bool = False  # end turns at a pause on Whisper + the end-of-turn head (TurnJudge)
    asr_backend: str = "ct2"  # the judge's Whisper: ct2, or torch (hosts with CUDA 13)
    turn_rule: str = "text"  # what the judge reads: text (Whisper + head), audio (Smart Turn), both
    judge_timeout_s: float = 0.5  # a later score is dropped: the reply is not held for it (silence ends the turn)


def _load_model(cfg: DirectConfig, device):  # noqa: ANN001, ANN202
    """The speech model: trained weights, or random ones ("random": full size, "tiny": smoke size)."""
    from model.lora import merge_lora

    if cfg.weights == "tiny":
        from model.presets import tiny_speech_config
        from model.speech import SpeechModel

        model = SpeechModel(tiny_speech_config(n_q=8, card=2048, text_card=49152)).to(device)
    elif cfg.weights == "random":
        from model.presets import full_speech_config
        from model.speech import SpeechModel

        model = SpeechModel(full_speech_config(gguf=cfg.gguf)).to(device)
    else:
        from model.speech_ckpt import DEFAULT_DIR, load_speech_model

        model = load_speech_model(cfg.weights or DEFAULT_DIR, gguf_path=cfg.gguf, device=device)
    merge_lora(model.backbone)
    return model.eval()


def _check_codec(weights, codec) -> None:  # noqa: ANN001
    """Warn when the speech model learnt the tokens of another codec version than the codec in use
    (loaded or injected: `load_codec` sets its `codec_id`): its codes then mean other sounds
    (retrain it on the new codec's tokens: issue 11). A codec of unknown version is not checked."""
    from model.speech_ckpt import trained_codec_id

    want, have = trained_codec_id(weights), getattr(codec, "codec_id", None)
    if want is not None and have is not None and want != have:
        log.warning("the speech model in %s was trained on codec %s tokens, the codec loaded is %s: "
                    "its speech will not be intelligible until it is retrained on this codec", weights, want, have)


def _load_codec(cfg: DirectConfig):  # noqa: ANN202
    """The codec: trained weights, or a tiny random one ("tiny", smoke runs)."""
    if cfg.codec == "tiny":
        import torch

        from codec.model import CodecConfig, ParleyCodec

        torch.manual_seed(0)
        return ParleyCodec(CodecConfig(n_filters=4, dimension=16, lstm=1)).eval()
    from codec import load_codec

    return load_codec(cfg.codec)


def _streaming_codec(codec, cfg: DirectConfig, device):  # noqa: ANN001, ANN202
    """What the frame clock streams: on CPU the fast path (codec/fast.py: same codes, ~2.5x less
    time per frame) when `cfg.fast_codec` and the codec supports it, else the torch codec."""
    if device.type != "cpu" or not cfg.fast_codec:
        return codec
    from codec.fast import FastCodec, supports

    if not supports(codec):
        log.info("codec: no fast CPU path for this codec (not causal / reflect padding); streaming in torch")
        return codec
    return FastCodec(codec)


class DirectEngine(Engine):
    name = "direct"

    def __init__(self, cfg: DirectConfig = DirectConfig(), *, model=None, codec=None, detokenize=None,  # noqa: ANN001
                 judge=None) -> None:
        import torch

        from codec.io import silence_codes
        from model.generator import SpeechGenerator
        from voice.engines.clock import FrameClock

        self.cfg = cfg
        dev = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        trained = model is None and cfg.weights not in ("tiny", "random")
        model = model if model is not None else _load_model(cfg, dev)
        codec = codec if codec is not None else _load_codec(cfg)
        if trained:
            from model.speech_ckpt import DEFAULT_DIR

            _check_codec(cfg.weights or DEFAULT_DIR, codec)
        if detokenize is None:
            from model.gguf import load_tokenizer

            detokenize = load_tokenizer(cfg.gguf).decode
        self.model, self.detokenize = model, detokenize
        self.layout = model.cfg.layout
        self.hop, self.sample_rate = codec.hop_length, codec.sample_rate
        codec.eval().to(dev)
        # (K,) the silence the model was trained on (the token manifests' `silence`): the last frame of
        # 160 ms of zeros differs from it in 6 of 8 codebooks with codec v4, and a muted user fed those
        # unseen codes derailed the served replies (2026-12-02)
        self.silence = silence_codes(codec)[: self.layout.n_q]
        self.gen = SpeechGenerator(model, max_batch=cfg.max_sessions, max_frames=cfg.max_frames, device=dev,
                                   dtype=getattr(torch, cfg.dtype), cpu_step=cfg.cpu_step)
        streamed = _streaming_codec(codec, cfg, dev)
        self.codec_runtime = "torch" if streamed is codec else "onnx"
        self.clock = FrameClock(self.gen, streamed, self.silence)
        self.handoff = Handoff()  # the clock's frames to the replies' event loop, one wake-up a tick
        self.codec = self.clock.codec
        self.judge = judge  # a TurnJudge (or anything with judge_async, threshold, close)
        if judge is None and cfg.semantic_turns:
            from voice.engines.turn_judge import JudgeConfig, TurnJudge

            self.judge = TurnJudge(JudgeConfig(asr_backend=cfg.asr_backend, device=dev.type, rule=cfg.turn_rule))
            self.judge.warm_up()
        self.clock.start()

    def info(self) -> dict:
        import torch

        return {"engine": self.name, "sessions": self.cfg.max_sessions, "device": str(self.gen.device),
                "frame_ms": 1000 * self.hop / self.sample_rate,
                "weights": self.cfg.weights or "weights/s2s", "codec": self.cfg.codec or "weights/codec",
                "codec_runtime": self.codec_runtime + (" (CUDA graphs)" if self.clock.codec_graphed else ""),
                "dtype": self.cfg.dtype, "cpu_step": self.gen.cpu_step.value,
                "torch_threads": torch.get_num_threads(), "turns": "semantic" if self.judge else "silence"}

    def stats(self, since: int = 0) -> dict:
        """The frame clock's timing over its ticks numbered >= ``since`` (see FrameClock.timing)."""
        return {"frame_clock": self.clock.timing(since)}

    def session(self) -> "DirectSession":
        """A new session in a free slot; RuntimeError when all ``max_sessions`` are taken."""
        return DirectSession(self)

    async def close(self) -> None:
        self.clock.stop()
        if self.judge is not None:
            self.judge.close()


class Handoff:
    """Items for asyncio queues, put from another thread: one `call_soon_threadsafe` per loop for all
    items put before that loop runs (a tick's frames of every replying session), not one per item
    (each is a self-pipe write that also gives the GIL away from the putting thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}

    def put(self, loop: asyncio.AbstractEventLoop, q: asyncio.Queue, item: object) -> None:
        with self._lock:
            items = self._pending.setdefault(loop, [])
            items.append((q, item))
            first = len(items) == 1
        if first:
            try:
                loop.call_soon_threadsafe(self._drain, loop)
            except RuntimeError:  # the loop is closed (shutdown): its items go nowhere, the clock goes on
                with self._lock:
                    self._pending.pop(loop, None)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            items = self._pending.pop(loop, [])
        for q, item in items:
            q.put_nowait(item)


@dataclass
class _Said:
    t: float  # arrival of the user frame it answers (muted or missing: the tick's time)
    audio: np.ndarray  # (hop,) float32 at 16 kHz
    text: int  # text token (PAD when silent)


class DirectSession(EngineSession):
    def __init__(self, engine: DirectEngine) -> None:
        self.e = engine
        self.buf = np.zeros(0, dtype=np.float32)
        self.responding = False
        n_keep = int(engine.cfg.keep_s * engine.sample_rate / engine.hop)
        self.said: collections.deque[_Said] = collections.deque(maxlen=n_keep)
        self._reply: tuple[asyncio.AbstractEventLoop, asyncio.Queue] | None = None
        self.closed = False
        self.speculative = engine.judge is not None  # respond(final=False) at pauses, see TurnJudge
        self.slot = engine.clock.join(self._on_frame)

    def _on_frame(self, f) -> None:  # noqa: ANN001 - a ClockFrame, on the clock's thread
        said = _Said(f.t, f.audio, f.text)
        reply = self._reply
        if reply is not None:
            self.e.handoff.put(*reply, said)
        else:
            self.said.append(said)

    def feed(self, chunk_16k: np.ndarray, t: float) -> None:
        if self.responding or self.closed:
            return
        self.buf = np.concatenate([self.buf, np.asarray(chunk_16k, dtype=np.float32)])
        while len(self.buf) >= self.e.hop:
            x, self.buf = self.buf[: self.e.hop], self.buf[self.e.hop :]
            self.e.clock.push(self.slot, x, t)

    # --- a reply --------------------------------------------------------------------------
    async def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        cfg, sr, hop = self.e.cfg, self.e.sample_rate, self.e.hop
        heard = None  # rule "audio": a Future of the transcript, sent when it is there
        if not turn.final and self.e.judge is not None:  # at a pause: is the user done? (still listening)
            t0, times = time.monotonic(), {}
            try:
                prob, text = await asyncio.wait_for(self.e.judge.judge_async(turn.audio, times=times), cfg.judge_timeout_s)
            except asyncio.TimeoutError:  # the reply would wait for it: the turn ends on silence instead
                log.warning("direct session %d: end-of-turn judge slower than %.1f s", self.slot, cfg.judge_timeout_s)
                prob, text = 0.0, ""
            except Exception:  # noqa: BLE001 - the turn then ends on silence, as without a judge
                log.exception("direct session %d: end-of-turn judge failed", self.slot)
                prob, text = 0.0, ""
            yield Stage("eot", 1000 * (time.monotonic() - t0))
            for name, ms in times.items():  # where the judge's time went: Whisper, the head (with their queues)
                yield Stage(f"eot_{name}", ms)
            if text is None:
                heard = self.e.judge.transcribe(turn.audio)
            else:
                yield UserText(text)
            yield EndOfTurn(prob, self.e.judge.threshold)
        frame_s = hop / sr
        queue: asyncio.Queue[_Said] = asyncio.Queue()
        self._reply = (asyncio.get_running_loop(), queue)  # the model's output from now on
        if turn.final:
            self._mute()
        # else the server holds our first audio until the turn really ends: the user stays heard until
        # then (a pause the user goes on after throws this reply away with nothing of theirs lost)
        try:
            backlog = [s for s in list(self.said) if s.t >= turn.t_speech_end]
            self.said.clear()
            started, quiet, n, waited = False, 0, 0, 0
            max_frames = int(cfg.max_reply_s / frame_s)  # of the reply, from its first loud frame
            pending_text: list[int] = []
            while n < max_frames:
                said = backlog.pop(0) if backlog else await queue.get()
                if heard is not None and heard.done():
                    yield UserText("" if heard.exception() else heard.result())
                    heard = None
                loud = float(np.sqrt(np.mean(said.audio**2))) > cfg.speech_rms
                if said.text < self.e.layout.text_card:
                    pending_text.append(said.text)
                if not started:
                    if not loud:
                        waited += 1
                        if waited * frame_s > cfg.start_timeout_s:
                            break
                        continue
                    started = True
                    yield Stage("engine", 1000 * (time.monotonic() - turn.t_decided))
                n += 1
                quiet = 0 if loud else quiet + 1
                text = self.e.detokenize(pending_text) if pending_text else ""
                pending_text = []
                if text:
                    yield AgentText(text)
                yield AgentAudio(said.audio, sr, text)
                if not self.responding:  # speculative: we are past the server's hold, the turn is over
                    self._mute()
                if quiet * frame_s >= cfg.end_silence_s:
                    break
        finally:
            self._reply = None
            self.e.clock.mute(self.slot, False)
            self.responding = False

    def _mute(self) -> None:
        """Half duplex for the reply: from the next tick the user's input is the silence codes."""
        self.responding = True
        self.buf = np.zeros(0, dtype=np.float32)
        self.e.clock.mute(self.slot, True)

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:
        log.debug("direct session %d turn %d: played %r (interrupted=%s)", self.slot, turn, played_text, interrupted)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.e.clock.leave(self.slot)


def create(cfg: DirectConfig) -> DirectEngine:
    """The direct engine; weights load in the constructor."""
    return DirectEngine(cfg)
