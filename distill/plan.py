"""What one trace will contain, as a pure function of (seed, index): the trace plan.

Every random choice of a trace (split, case, voice, prompts, augmentation, LLM seeds) is drawn
here from ``SeedSequence([seed, index])``, so a trace is the same whichever worker makes it,
in whatever order, on whichever machine, and a resumed run regenerates exactly the missing ones.

Splits (see README "held-out split"):
- ``train``: training templates (prompts/__init__.py) spoken by training voices (voices.py);
- ``eval``: held-out templates/dialogues spoken by held-out synthetic voices;
- ``eval_real``: the real recorded speaker of asterisk-core-sounds-en-g722 (one US female voice,
  real IVR prompts, never used in training traces); the user text is what Whisper hears.

Cases: ``single`` (one exchange), ``dialogue`` (2-3 exchanges with history), ``interruption``
(the user cuts into the agent's reply; the history keeps only what was heard), ``backchannel``
(the user says "mm-hmm" during the agent's reply; the agent keeps the floor: empty reply),
``silence`` (the user says nothing, room tone only; the agent stays silent: empty reply).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from model.common.paths import ASTERISK_EN_PROMPTS
from distill.augment import AugmentParams, sample_params
from distill.prompts import PromptBank
from distill.voices import EVAL_VOICES, UserVoice, sample_train_voice

# Bump when a change alters what a given (seed, index) produces: stored in every record and run.
PLAN_VERSION = 2
CASES = ("single", "dialogue", "interruption", "backchannel", "silence")
CASE_P = (0.45, 0.22, 0.15, 0.10, 0.08)
REAL_VOICE = "real:asterisk-en_US_f_Allison"


@dataclass(frozen=True)
class PlannedTurn:
    kind: str  # prompt kind (question, ..., interruption, backchannel, silence, real)
    text: str  # what the user says ("" for silence and real recordings)
    template: str
    augment: AugmentParams
    audio_seed: int  # pauses / noise / reverb draws
    llm_seed: int
    recording: str = ""  # real speaker: prompt name under ASTERISK_EN_PROMPTS
    silence_s: float = 0.0
    cut_reply_at: float | None = None  # the next user turn starts at this fraction of this reply
    overlap_prev_at: float | None = None  # this turn starts at this fraction of the previous reply


@dataclass(frozen=True)
class TracePlan:
    index: int
    seed: int
    split: str
    case: str
    voice: str  # UserVoice spec, or REAL_VOICE
    turns: tuple[PlannedTurn, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return asdict(self)


def _seed32(*xs: int) -> int:
    return int(np.random.SeedSequence(list(xs)).generate_state(1)[0])


def real_prompts() -> list[str]:
    return sorted(p.stem for p in ASTERISK_EN_PROMPTS.glob("*.g722")) if ASTERISK_EN_PROMPTS.is_dir() else []


_BANK: PromptBank | None = None
_REAL: list[str] | None = None


def make_plan(seed: int, index: int, eval_frac: float = 0.05, real_frac: float = 0.35) -> TracePlan:
    global _BANK, _REAL
    if _BANK is None:
        _BANK = PromptBank()
    if _REAL is None:
        _REAL = real_prompts()
    bank = _BANK
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    split = "eval" if rng.random() < eval_frac else "train"
    if split == "eval" and _REAL and rng.random() < real_frac:
        name = _REAL[int(rng.integers(len(_REAL)))]
        t = PlannedTurn("real", "", "", sample_params(rng), _seed32(seed, index, 0, 1), _seed32(seed, index, 0, 2),
                        recording=name)
        return TracePlan(index, seed, "eval_real", "single", REAL_VOICE, (t,))
    case = str(rng.choice(CASES, p=CASE_P))
    if split == "eval":
        voice = UserVoice.parse(EVAL_VOICES[int(rng.integers(len(EVAL_VOICES)))])
    else:
        voice = sample_train_voice(rng)

    def turn(j: int, prompt, **kw) -> PlannedTurn:
        return PlannedTurn(prompt.kind, prompt.text, prompt.template, sample_params(rng),
                           _seed32(seed, index, j, 1), _seed32(seed, index, j, 2), **kw)

    turns: list[PlannedTurn] = []
    if case == "single":
        turns = [turn(0, bank.prompt(rng, split))]
    elif case == "dialogue":
        ps = bank.dialogue(rng, split, int(rng.integers(2, 4)))
        turns = [turn(j, p) for j, p in enumerate(ps)]
    elif case == "interruption":
        frac = round(float(rng.uniform(0.2, 0.7)), 3)
        turns = [turn(0, bank.prompt(rng, split), cut_reply_at=frac),
                 turn(1, bank.interruption(rng), overlap_prev_at=frac)]
    elif case == "backchannel":
        frac = round(float(rng.uniform(0.3, 0.8)), 3)
        turns = [turn(0, bank.prompt(rng, split)), turn(1, bank.backchannel(rng), overlap_prev_at=frac)]
    elif case == "silence":
        from distill.prompts import Prompt

        quiet = Prompt("", "silence", "")
        s = round(float(rng.uniform(1.5, 4.0)), 2)
        if rng.random() < 0.5:
            turns = [turn(0, quiet, silence_s=s)]
        else:
            turns = [turn(0, bank.prompt(rng, split)), turn(1, quiet, silence_s=s)]
    return TracePlan(index, seed, split, case, voice.spec, tuple(turns))
