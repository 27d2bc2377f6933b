"""Streamed reply text -> speakable clauses: when a piece of the LLM's reply goes to TTS.

A clause is ready at punctuation followed by a space (>= MIN_CLAUSE_WORDS words); a long run
without punctuation is cut at a conjunction or a word boundary (shorter limits for the first two
clauses, so the first audio comes early). ``trim_silence`` cuts a clause's leading (and trailing)
near-silence. Used by the cascade (voice/engines/cascade.py).
"""

from __future__ import annotations

import re

import numpy as np

_CLAUSE_END = re.compile(r"[.!?;:,]\s")  # a clause is finished once punctuation is followed by space
MIN_CLAUSE_WORDS = 3  # shorter pieces wait for more text (natural prosody)
FIRST_MAX_WORDS = 3  # the first clause is cut here even without punctuation (first audio after ~4 tokens)
SECOND_MAX_WORDS = 8  # the second one too: it must be ready before the short first one has played
MAX_WORDS = 24  # later clauses likewise (TTS of a very long clause delays everything after it)
_BREAK_WORDS = {"and", "but", "or", "so", "because", "which", "that", "when", "while", "with", "to"}


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
