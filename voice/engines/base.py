"""The engine interface: what a speech engine (cascade, direct, test engines) must provide.

A server `Session` owns the transport, the VAD turn taking and the output track; the engine
only turns user speech into agent speech. Per connection the server asks the shared `Engine`
for an `EngineSession` (per-conversation state: history, caches) and then:

    session.feed(chunk_16k, t)      every 32 ms of user audio (full-duplex engines may listen)
    async for ev in session.respond(turn):   after the VAD ends a user turn
        UserText(text)              what the user said (ASR), once
        AgentText(text)             generated text as it streams (deltas, not yet spoken)
        AgentAudio(audio, sr, text) a piece of agent speech and the words it speaks
        Stage(name, ms)             latency of one stage of this reply (see below)
    session.commit(turn, played_text, interrupted)   what the user actually heard

`respond` is an async generator; the server cancels its task on barge-in, so an engine must
stop its pending model work when the generator is closed (check a flag between tokens /
clauses; heavy work runs in a thread pool, never on the event loop). The history an engine
keeps must contain only `played_text` for the agent's side: the server computes it from the
samples actually sent (whole pieces sent + the sent fraction of the interrupted piece, cut at
a word boundary).

Stage names used in the per-turn latency event (milliseconds, they add up to the server's time
from the end of the user's speech to the first agent audio):

    vad_endpoint   end of user speech -> VAD decides the turn is over   (added by the server)
    asr            speech recognition of the turn
    llm_first_token  ASR done -> first LLM token
    tts_first_audio  first LLM token -> first audio ready (rest of the first clause + TTS)

Other engines use their own names (e.g. "engine" for the tone engine, "model_first_frame").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class UserTurn:
    """A finished user turn as cut by the VAD."""

    turn: int  # 1, 2, ... per session
    audio: np.ndarray = field(repr=False)  # (T,) float32 at 16 kHz: the turn with pre-roll
    t_speech_end: float  # monotonic time at which the user's speech ended (server clock)
    t_decided: float  # monotonic time at which the VAD ended the turn
    final: bool = True  # False: a speculative reply started at a pause (the user may go on)


@dataclass(frozen=True)
class EndOfTurn:
    prob: float  # a speculative reply's estimate that the user's turn is over (0..1)
    threshold: float = 0.5  # the engine's own decision point for prob (TurnConfig.eot_threshold overrides)


@dataclass(frozen=True)
class UserText:
    text: str  # transcript of the user's turn


@dataclass(frozen=True)
class AgentText:
    text: str  # a piece of the agent's reply text as generated (delta)


@dataclass(frozen=True)
class AgentAudio:
    audio: np.ndarray = field(repr=False)  # (T,) float32 mono
    sample_rate: int
    text: str = ""  # the words this audio speaks ("" for non-speech)


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "asr", "llm_first_token", "tts_first_audio"
    ms: float


EngineEvent = UserText | AgentText | AgentAudio | Stage | EndOfTurn


class EngineSession(ABC):
    """Per-connection engine state (conversation history, caches).

    `speculative` engines get `respond(UserTurn(final=False))` at the first silent chunk of every
    pause in a turn: they yield `EndOfTurn(prob, threshold)` once they know what was said, then their reply,
    which the server holds until the turn ends (then it is played; prob >= threshold ends it once the
    pause reaches `TurnConfig.pause_ms`) or the user goes on (then the task is cancelled and
    `discard(turn)` called: nothing of it is ever played or kept)."""

    speculative: bool = False

    def feed(self, chunk_16k: np.ndarray, t: float) -> None:  # noqa: B027 - optional hook
        """Every 512-sample (32 ms) chunk of user audio at 16 kHz, arrival time `t`."""

    @abstractmethod
    def respond(self, turn: UserTurn) -> AsyncIterator[EngineEvent]:
        """Answer one user turn (async generator); cancelled by the server on barge-in."""

    def discard(self, turn: int) -> None:  # noqa: B027 - optional hook
        """A speculative reply to `turn` was thrown away (the user went on): forget its turn."""

    def commit(self, turn: int, played_text: str, interrupted: bool) -> None:  # noqa: B027
        """The agent's reply to `turn` as the user heard it (called once per answered turn)."""

    async def close(self) -> None:  # noqa: B027
        """The connection is gone: release per-session resources."""


class Engine(ABC):
    """Shared by all sessions of a server (models loaded once)."""

    name: str = "engine"

    @abstractmethod
    def session(self) -> EngineSession:
        """A fresh conversation (RuntimeError when the engine has no room for one)."""

    async def open_session(self) -> EngineSession:
        """``session()`` for callers on the event loop (a remote engine answers asynchronously)."""
        return self.session()

    def info(self) -> dict:
        """Short description for the offer answer and `GET /health` (JSON-serializable)."""
        return {"engine": self.name}

    async def close(self) -> None:  # noqa: B027
        """Server shutdown."""
