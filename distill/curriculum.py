"""The three curriculum stages of the direct model (issue 11) as frame-grid example layouts.

Every stage lays its data out on the model's step grid (model/layout.py) and returns
``build_inputs(...)`` plus ``agent_speaking`` [T]; `train` mixes nothing: one run, one stage.

    Speak     user : [silence ...........................................]
              agent: [silence][agent speech (piper joe) .......][silence]
              text : [PAD ....][w0 PAD w1 w2 ... (word-timed) ][PAD ....]
    Listen    user : [silence][user speech (many voices) ......][silence]
              agent: [silence ...........................................]
              utext:          [.. v0 .. v1 v2 (aux, +delay) ...]
    Converse  user : [u0 ..........]      [u1 (cuts in) ....]    [mm-hmm]
              agent:      gap ->[a0 ...........]stop  gap ->[a1 .............]
              text :            [w ...  .. w ]            [w ... .. .. w ]
              utext:  [v ... v]           [v ... v]              [v]

Speak teaches the model to say what its text stream says, Listen to know what was said, Converse
when to speak: the reply starts ``gap`` frames after the user's speech ends, the agent stops
``stop_frames`` after a user cuts in (interruption), keeps talking through a backchannel and stays
silent in silence turns. Items are ``Turn``s (Speak, Listen) or traces ``list[Turn]`` (Converse).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

import numpy as np

from model.layout import StreamLayout, align_text, build_inputs, place_text, user_text_frames


class Stage(str, enum.Enum):
    SPEAK = "speak"
    LISTEN = "listen"
    CONVERSE = "converse"


@dataclass
class Turn:
    """One tokenized trace turn (frame grid, codec tokens [K, T])."""

    user: np.ndarray  # (K, Tu)
    agent: np.ndarray  # (K, Ta)
    reply_tokens: list[int]  # backbone text tokens of the reply
    reply_char_lens: list[int] | None = None
    token_frames: list[int] | None = None  # frame of each reply token from the agent's start (TTS timings)
    name: str = ""
    reply_text: str = ""  # the teacher's reply (eval)
    voice: str = ""  # the user's voice (eval groups: held-out synthetic / real)
    user_tokens: list[int] = field(default_factory=list)  # what the user said (aux stream)
    user_token_frames: list[int] | None = None  # frame of each from the user's start; None: spread
    case: str = ""  # single, dialogue, interruption, backchannel, silence
    trace: str = ""  # trace key: turns of one trace form a Converse item
    interrupted_at: int | None = None  # frame into this reply where the next user turn cuts in
    overlap_prev_at: int | None = None  # frame into the previous reply where this user turn starts


@dataclass(frozen=True)
class CurriculumConfig:
    """How a stage lays its examples out (frames are codec frames: 40 ms with codec v2)."""

    stage: Stage = Stage.CONVERSE
    lead: tuple[int, int] = (1, 6)  # silence before the first speech (random in range)
    gap: tuple[int, int] = (3, 8)  # user speech end -> agent's first frame; also between exchanges
    tail: int = 6  # silence after the last speech
    stop_frames: int = 2  # an interrupted agent stops this many frames after the user cuts in
    user_text: bool = True  # Listen / Converse: lay out the aux user-text stream

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))


class Grid:
    """The streams of one example being laid out, in the frame grid (silence / PAD by default)."""

    def __init__(self, T: int, silence: np.ndarray, layout: StreamLayout) -> None:
        self.T, self.layout = T, layout
        self.user = np.repeat(silence[:, None].astype(np.int64), T, axis=1)  # [K, T]
        self.agent = self.user.copy()  # [K, T]
        self.text = np.full(T, layout.text_pad, dtype=np.int64)  # [T]
        self.utext = np.full(T, layout.text_pad, dtype=np.int64)  # [T]
        self.speaking = np.zeros(T, dtype=bool)  # [T]

    def put_user(self, turn: Turn, u0: int, aux: bool) -> int:
        """User codes from frame u0 (+ the aux user text); returns the end frame."""
        Tu = turn.user.shape[1]
        if u0 < self.T:
            self.user[:, u0 : min(u0 + Tu, self.T)] = turn.user[:, : self.T - u0]
        if aux and turn.user_tokens and u0 < self.T:
            if turn.user_token_frames is not None:
                ut = place_text(turn.user_tokens, user_text_frames(turn.user_token_frames, self.layout), u0, self.T,
                                self.layout)
            else:
                d = self.layout.user_text_delay
                ut = align_text(turn.user_tokens, u0 + d, u0 + Tu + d, self.T, self.layout)
            self.utext = np.where(ut != self.layout.text_pad, ut, self.utext)
        return u0 + Tu

    def put_agent(self, turn: Turn, a0: int, length: int) -> int:
        """The first ``length`` frames of the reply from frame a0, its word-timed text; -> end frame."""
        L = min(length, max(self.T - a0, 0))
        if L <= 0:
            return a0 + length
        self.agent[:, a0 : a0 + L] = turn.agent[:, :L]
        self.speaking[a0 : a0 + L] = True
        if turn.token_frames is not None:
            txt = place_text(turn.reply_tokens, turn.token_frames, a0, self.T, self.layout)
        else:
            txt = align_text(turn.reply_tokens, a0, a0 + turn.agent.shape[1], self.T, self.layout, turn.reply_char_lens)
        txt[max(a0 + L - self.layout.text_lead, 0) :] = self.layout.text_pad  # words after the agent stopped were never said
        self.text = np.where(txt != self.layout.text_pad, txt, self.text)
        return a0 + length

    def inputs(self, with_user_text: bool) -> dict[str, np.ndarray]:
        ex = build_inputs(self.user, self.agent, self.text, self.layout, self.utext if with_user_text else None)
        ex["agent_speaking"] = self.speaking.copy()
        return ex


def speak_example(turn: Turn, silence: np.ndarray, layout: StreamLayout, cc: CurriculumConfig,
                  rng: random.Random, max_frames: int) -> dict[str, np.ndarray]:
    """Speak: the user is silent; the agent says its reply, the monologue aligned to it."""
    lead, Ta = rng.randint(*cc.lead), turn.agent.shape[1]
    g = Grid(min(lead + Ta + cc.tail, max_frames), silence, layout)
    g.put_agent(turn, lead, Ta)
    return g.inputs(False)


def listen_example(turn: Turn, silence: np.ndarray, layout: StreamLayout, cc: CurriculumConfig,
                   rng: random.Random, max_frames: int) -> dict[str, np.ndarray]:
    """Listen: the user speaks, the agent stays silent; the aux stream spells the user's words."""
    lead, Tu = rng.randint(*cc.lead), turn.user.shape[1]
    g = Grid(min(lead + Tu + layout.user_text_delay + cc.tail, max_frames), silence, layout)
    g.put_user(turn, lead, cc.user_text)
    return g.inputs(cc.user_text)


def converse_example(trace: list[Turn], silence: np.ndarray, layout: StreamLayout, cc: CurriculumConfig,
                     rng: random.Random, max_frames: int) -> dict[str, np.ndarray]:
    """Converse: the whole trace on one timeline (interruptions, backchannels, silence turns)."""
    # pass 1: positions of every user and agent segment
    plan: list[tuple[int, int, int]] = []  # (user start, agent start, agent frames kept) per turn
    end = rng.randint(*cc.lead)  # the timeline is free from here
    prev_a0, prev_Ta = None, 0
    for t in trace:
        if t.overlap_prev_at is not None and prev_a0 is not None:
            u0 = prev_a0 + min(int(t.overlap_prev_at), prev_Ta)  # cuts in / backchannels over the reply
        else:
            u0 = end if not plan else end + rng.randint(*cc.gap)
        uend = u0 + t.user.shape[1]
        Ta = t.agent.shape[1]
        keep = min(Ta, int(t.interrupted_at) + cc.stop_frames) if t.interrupted_at is not None else Ta
        a0 = uend + rng.randint(*cc.gap)
        plan.append((u0, a0, keep if Ta else 0))
        end = max(end, uend, a0 + keep if Ta else uend)
        if Ta:
            prev_a0, prev_Ta = a0, Ta
    g = Grid(min(end + layout.user_text_delay + cc.tail, max_frames), silence, layout)
    for t, (u0, a0, keep) in zip(trace, plan):
        g.put_user(t, u0, cc.user_text)
        if keep:
            g.put_agent(t, a0, keep)
    return g.inputs(cc.user_text)


def stage_example(item: Turn | list[Turn], silence: np.ndarray, layout: StreamLayout, cc: CurriculumConfig,
                  rng: random.Random, max_frames: int) -> dict[str, np.ndarray]:
    """One training example of ``cc.stage`` from a turn (Speak, Listen) or a trace (Converse)."""
    if cc.stage is Stage.CONVERSE:
        return converse_example(item if isinstance(item, list) else [item], silence, layout, cc, rng, max_frames)
    turns = item if isinstance(item, list) else [item]
    fn = speak_example if cc.stage is Stage.SPEAK else listen_example
    return fn(turns[rng.randrange(len(turns))], silence, layout, cc, rng, max_frames)


def stage_items(turns: list[Turn], stage: Stage) -> list[Turn] | list[list[Turn]]:
    """The training items of a stage: Speak keeps turns the agent speaks in, Listen turns with
    user speech and words, Converse groups turns into traces (in turn order)."""
    stage = Stage(stage)
    if stage is Stage.SPEAK:
        return [t for t in turns if t.agent.shape[1] > 0]
    if stage is Stage.LISTEN:
        return [t for t in turns if t.user.shape[1] > 0 and t.user_tokens]
    traces: dict[str, list[Turn]] = {}
    for i, t in enumerate(turns):
        traces.setdefault(t.trace or f"#{i}", []).append(t)
    return list(traces.values())
