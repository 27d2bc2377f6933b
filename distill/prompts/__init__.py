"""The Parley prompt set: what synthetic users say (templates x slot fillers, dialogues, events).

    bank = PromptBank()
    p = bank.prompt(rng, split="train")          # Prompt(text, kind, template)
    turns = bank.dialogue(rng, "train", 3)       # multi-turn: list[Prompt]

Held-out split: a template (or scripted dialogue) is *held out for eval* when
crc32(template) % 10 == 0 (stable: adding templates never moves old ones). Training traces only
use train templates; eval traces only held-out ones, so eval prompts are new sentence shapes, not
re-filled training sentences. Slot values and follow-up lines are shared by both splits.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from distill.prompts.dialogues import DIALOGUES
from distill.prompts.slots import SLOTS, number_slots
from distill.prompts.templates import (
    BACKCHANNELS, CLOSERS, FAMOUS, FOLLOW_UPS, INTERRUPTIONS, OPENERS, SHORT_QUESTIONS, TEMPLATES,
)

SPLITS = ("train", "eval")
EVAL_MOD = 10  # 1 in EVAL_MOD templates is held out
_SLOT = re.compile(r"\{(\w+)\}")
# aliases: a second distinct value of the same slot ("{city2}") and the person-name slot
_ALIAS = {"city2": "city", "country2": "country", "animal2": "animal", "food2": "food", "pname": "name"}


@dataclass(frozen=True)
class Prompt:
    text: str  # what the synthetic user says
    kind: str  # question | request | chitchat | numbers | names | dialogue | follow_up | interruption | backchannel
    template: str  # the unfilled template (provenance; "" for fixed lines)


def is_held_out(template: str) -> bool:
    return zlib.crc32(template.encode()) % EVAL_MOD == 0


def _split_of(template: str) -> str:
    return "eval" if is_held_out(template) else "train"


def _sentence_case(text: str) -> str:
    """Capitalize the first letter of each sentence ("Hold on. how ..." -> "Hold on. How ...")."""
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def fill(template: str, rng: np.random.Generator) -> str:
    """Fill every {slot}; repeated aliases ({city} / {city2}) get distinct values."""
    nums = number_slots(rng)
    used: dict[str, str] = {}

    def value(m: re.Match) -> str:
        key = m.group(1)
        if key in nums:
            return nums[key]
        if key == "famous":
            return str(rng.choice(FAMOUS))
        if key == "short_q":
            return str(rng.choice(SHORT_QUESTIONS))
        base = _ALIAS.get(key, key)
        if key == "topic" and "topic" in used:
            return used["topic"]
        options = [v for v in SLOTS[base] if v not in used.values()]
        v = str(rng.choice(options))
        used[key] = v
        return v

    return _sentence_case(_SLOT.sub(value, template))


class PromptBank:
    """All prompt templates grouped by split; sampling is a pure function of the rng."""

    def __init__(self) -> None:
        self.templates: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
        for kind, ts in TEMPLATES.items():
            for t in ts:
                self.templates[_split_of(t)].setdefault(kind, []).append(t)
        self.dialogues: dict[str, list[tuple[str, ...]]] = {s: [] for s in SPLITS}
        for d in DIALOGUES:
            self.dialogues[_split_of(" | ".join(d))].append(d)
        self.kinds = sorted(TEMPLATES)

    def prompt(self, rng: np.random.Generator, split: str = "train", kind: str | None = None) -> Prompt:
        by_kind = self.templates[split]
        kind = kind if kind in by_kind else str(rng.choice(sorted(by_kind)))
        t = str(rng.choice(by_kind[kind]))
        text = fill(t, rng)
        r = rng.random()
        if r < 0.15:  # spoken openers / closers for variety
            text = str(rng.choice(OPENERS)) + text[0].lower() + text[1:] if not text.startswith(("I ", "I'")) \
                else str(rng.choice(OPENERS)) + text
        elif r < 0.22 and kind == "request":
            text = text + str(rng.choice(CLOSERS))
        return Prompt(_sentence_case(text), kind, t)

    def dialogue(self, rng: np.random.Generator, split: str, n_turns: int) -> list[Prompt]:
        """A conversation of n_turns user turns: a scripted dialogue or a prompt + follow-ups."""
        scripted = self.dialogues[split]
        if scripted and rng.random() < 0.5:
            d = scripted[int(rng.integers(len(scripted)))]
            key = " | ".join(d)
            # fill all turns with one rng so slots stay consistent within a dialogue
            return [Prompt(fill(t, rng), "dialogue", key) for t in d[:n_turns]]
        first = self.prompt(rng, split)
        rest = [Prompt(fill(t, rng), "follow_up", t) for t in rng.choice(FOLLOW_UPS, n_turns - 1, replace=False)]
        return [first, *rest]

    def interruption(self, rng: np.random.Generator) -> Prompt:
        t = str(rng.choice(INTERRUPTIONS))
        return Prompt(fill(t, rng), "interruption", t)

    def backchannel(self, rng: np.random.Generator) -> Prompt:
        return Prompt(str(rng.choice(BACKCHANNELS)), "backchannel", "")

    def counts(self) -> dict[str, int]:
        """Templates per split and the number of distinct filled items (numbers counted once)."""
        out: dict[str, int] = {}
        for s in SPLITS:
            ts = [t for k in self.templates[s].values() for t in k]
            out[f"templates_{s}"] = len(ts)
            out[f"dialogues_{s}"] = len(self.dialogues[s])
            out[f"items_{s}"] = sum(_n_fills(t) for t in ts)
        return out


def _n_fills(template: str) -> int:
    n = 1
    for key in _SLOT.findall(template):
        base = _ALIAS.get(key, key)
        n *= len(SLOTS[base]) if base in SLOTS else len(FAMOUS) if key == "famous" else 10
    return n
