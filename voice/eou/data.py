"""Text-only training data for the end-of-turn head, generated deterministically.

    data = build_dataset(EouDataConfig())        # EouData: utterances + labeled cut points
    data.utterances[0]                           # Utterance(words, context, template, split, noise)

Sources: the prompt templates, follow-ups, interruptions, back-channels and dialogue lines of
distill/prompts, the questions of voice/bench/facts.py, voice/eou/phrases.py and the composed
lines of voice/eou/grammar.py (opening x core x optional tail), slots filled
with a seeded rng, all normalized like the scored transcript (`eou.normalize`). Optional "ASR
noise": a copy with one word dropped or one extra word (never the last one). Half of the
utterances get one of the agent's replies as context.

Labels per utterance (one forward gives them all, `eou.features_at`):
- the whole utterance: positive, weight 1;
- every prefix cut at a word boundary: negative, weights proportional to its length (k/n of the
  words) and summing to `neg_weight` per utterance, so short, easy fragments ("can you") count
  little; left out: cuts at punctuation (a sentence or clause may end there: "hi. what's up")
  and prefixes that are themselves a whole utterance of the set ("tell me a joke").
Held out: the 20 sentences of voice/bench/eot.py (the evaluation set) and every near-duplicate:
the same first part after expanding contractions ("what's the difference between" = "what is the
difference between"), or the same last three words ("who wrote romeo and juliet"). Validation split: distill's template split
(`is_held_out`: 1 template in 10), so validation sentences have shapes the head never saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from distill.prompts import fill, is_held_out
from distill.prompts.dialogues import DIALOGUES
from distill.prompts.templates import BACKCHANNELS, FOLLOW_UPS, INTERRUPTIONS, OPENERS, SHORT_QUESTIONS, TEMPLATES
from model.components.eou import normalize
from voice.bench.eot import SENTENCES
from voice.bench.facts import FACTS
from voice.eou.grammar import composed_lines
from voice.eou.phrases import AGENT_REPLIES, EXTRA_TEMPLATES

# A cut before one of these, after a content word, may be a whole request with an optional tail
# ("tell me a joke | about cats", "remind me to call my mom | tomorrow at noon").
TAIL_STARTERS = frozenset("about for in at on from with by near during before after tomorrow today tonight this "
                          "next please again now every monday tuesday wednesday thursday friday saturday "
                          "sunday thanks thank if right exactly soon".split())
FUNCTION_WORDS = frozenset("a an the my your his her our their its this that these those of to and or but so is are "
                           "was were be do does did can could would will should i you we they he she it me what "
                           "how why when where who which if than very some any".split())
FILLERS = ("uh", "um", "the", "a", "and", "so", "like", "i")  # an extra word the ASR heard
_CONTRACTIONS = (("n't", " not"), ("'m", " am"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"),
                 ("'d", " would"), ("'s", " is"))


class TailLabel(str, Enum):
    """How a cut before an optional tail is labeled (see TAIL_STARTERS)."""

    NEGATIVE = "negative"  # like any other cut
    SKIP = "skip"  # not at all: it may or may not be complete
    POSITIVE = "positive"  # complete (a shorter request)


@dataclass(frozen=True)
class EouDataConfig:
    fills: int = 8  # slot fillings per template with slots (fixed lines once)
    composed_per_core: int = 4  # openings per core of voice/eou/grammar.py
    opener_p: float = 0.15  # a spoken opener ("um, ", "so, ") before a filled template
    noise_p: float = 0.3  # a noisy copy (one word dropped or added) of an utterance of >= 4 words
    context_p: float = 0.5  # an agent reply as context
    neg_weight: float = 1.0  # total weight of an utterance's cut prefixes (the whole: 1)
    tail: TailLabel = TailLabel.SKIP  # cuts before an optional tail
    tail_weight: float = 0.5  # weight of each such cut labeled positive
    seed: int = 0


@dataclass(frozen=True)
class Utterance:
    words: tuple[str, ...]  # normalized words of the whole utterance
    cuts: tuple[int, ...]  # word counts k of the negative prefixes (after filtering)
    ends: tuple[int, ...]  # word counts k of prefixes labeled complete (TailLabel.POSITIVE)
    context: str | None  # the agent's last reply, or None
    template: str  # provenance (the unfilled template or fixed line)
    split: str  # "train" | "val"
    noise: str  # "" | "drop" | "extra"

    def neg_weights(self, total: float) -> np.ndarray:
        k = np.asarray(self.cuts, np.float64)
        return total * k / k.sum() if len(k) else k


@dataclass
class EouData:
    utterances: list[Utterance]
    excluded: list[str] = field(default_factory=list)  # source lines dropped as near the eval set

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for split in ("train", "val"):
            us = [u for u in self.utterances if u.split == split]
            out[f"{split}_utterances"] = len(us)
            out[f"{split}_positives"] = len(us) + sum(len(u.ends) for u in us)
            out[f"{split}_negatives"] = sum(len(u.cuts) for u in us)
            out[f"{split}_with_context"] = sum(u.context is not None for u in us)
            out[f"{split}_noisy"] = sum(bool(u.noise) for u in us)
        out["excluded_as_eval_near_duplicates"] = len(self.excluded)
        return out


def eval_key(text: str) -> str:
    """Comparison key: normalized, contractions expanded ("what's" -> "what is")."""
    words = []
    for w in normalize(text).split():
        if w in ("can't", "won't"):
            words += ["can" if w == "can't" else "will", "not"]
            continue
        for short, long in _CONTRACTIONS:
            if w.endswith(short) and len(w) > len(short):
                w = w[: -len(short)] + long
                break
        words.append(w)
    return " ".join(words)


EVAL_FIRST_PARTS: tuple[str, ...] = tuple(eval_key(first) for first, _ in SENTENCES)
EVAL_ENDINGS: tuple[str, ...] = tuple(" ".join(eval_key(f"{first} {rest}").split()[-3:]) for first, rest in SENTENCES)


def near_eval(text: str) -> bool:
    """Starts like a sentence of the evaluation set (its first part, on a word boundary) or ends
    like one (its last three words: "who wrote romeo and juliet" ends like "... romeo and juliet")."""
    k = eval_key(text)
    return (any(k == f or k.startswith(f + " ") for f in EVAL_FIRST_PARTS)
            or any(k == e or k.endswith(" " + e) for e in EVAL_ENDINGS))


def is_tail_cut(words: list[str] | tuple[str, ...], k: int) -> bool:
    """The cut after k words comes before an optional tail: next word a TAIL_STARTER, last one a content word."""
    return 2 <= k < len(words) and words[k] in TAIL_STARTERS and words[k - 1] not in FUNCTION_WORDS


def _words_and_stops(text: str) -> tuple[list[str], set[int]]:
    """Normalized words and the word counts after which the original text had punctuation."""
    words: list[str] = []
    stops: set[int] = set()
    for raw in text.split():
        words += normalize(raw).split()
        if re.search(r"[.,!?;:]$", raw):
            stops.add(len(words))
    return words, stops


def _sources(cfg: EouDataConfig, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(text, template) of every line before noise, context and exclusion."""
    out: list[tuple[str, str]] = []
    templates = [t for ts in TEMPLATES.values() for t in ts] + [t for ts in EXTRA_TEMPLATES.values() for t in ts]
    templates += list(FOLLOW_UPS) + list(INTERRUPTIONS) + [" | ".join(d) for d in DIALOGUES]
    for t in templates:
        lines = t.split(" | ")  # a dialogue: each line is one user turn
        n = cfg.fills if "{" in t else 1
        for _ in range(n):
            for line in lines:
                text = fill(line, rng)
                if rng.random() < cfg.opener_p:
                    text = str(rng.choice(OPENERS)) + text
                out.append((text, t))
    out += composed_lines(rng, cfg.composed_per_core)
    fixed = [q[0].upper() + q[1:] for q in SHORT_QUESTIONS] + list(BACKCHANNELS) + [f.question for f in FACTS]
    out += [(s, s) for s in fixed]
    return out


def _noisy(words: list[str], stops: set[int], rng: np.random.Generator) -> tuple[list[str], set[int], str]:
    """One word dropped or one extra word at word i (never the last word); stops move with it."""
    i = int(rng.integers(0, len(words) - 1))
    if rng.random() < 0.5:
        return words[:i] + words[i + 1 :], {s - (s > i) for s in stops}, "drop"
    extra = str(rng.choice(FILLERS)) if rng.random() < 0.5 else words[i]  # a filler or a repeated word
    return words[:i] + [extra] + words[i:], {s + (s > i) for s in stops}, "extra"


def build_dataset(cfg: EouDataConfig = EouDataConfig()) -> EouData:
    """Every utterance with its cut points; deterministic for a config."""
    rng = np.random.default_rng(cfg.seed)
    rows: list[tuple[list[str], set[int], str, str]] = []  # words, stops, template, noise
    excluded: list[str] = []
    for text, template in _sources(cfg, rng):
        if near_eval(text) or any(near_eval(s) for s in re.split(r"(?<=[.!?,])\s+", text)):
            excluded.append(text)
            continue
        words, stops = _words_and_stops(text)
        if not words:
            continue
        rows.append((words, stops, template, ""))
        if len(words) >= 4 and rng.random() < cfg.noise_p:
            noisy, noisy_stops, kind = _noisy(words, stops, rng)
            rows.append((noisy, noisy_stops, template, kind))
    wholes = {" ".join(w) for w, *_ in rows}
    seen: set[tuple[str, str | None]] = set()
    utts: list[Utterance] = []
    for words, stops, template, noise in rows:
        context = str(rng.choice(AGENT_REPLIES)) if rng.random() < cfg.context_p else None
        key = (" ".join(words), context)
        if key in seen:
            continue
        seen.add(key)
        cuts = [k for k in range(1, len(words)) if k not in stops and " ".join(words[:k]) not in wholes]
        tails = [k for k in cuts if is_tail_cut(words, k)]
        if cfg.tail != TailLabel.NEGATIVE:
            cuts = [k for k in cuts if k not in tails]
        ends = tuple(tails) if cfg.tail == TailLabel.POSITIVE else ()
        split = "val" if is_held_out(template) else "train"
        utts.append(Utterance(tuple(words), tuple(cuts), ends, context, template, split, noise))
    return EouData(utts, excluded)
