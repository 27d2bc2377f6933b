"""Short spoken factual questions for the cascade: the question set, synthetic user voices, scoring.

    clips = spoken_questions(voices=USER_VOICES)   # [(question, voice, audio 16 kHz)]
    correct(answer, FACTS[i])                      # any accepted keyword in the answer

Voices: the bundled Piper joe (neural) and flite's kal16/awb/rms/slt (diphone, several speakers);
espeak-ng is left out (Whisper transcribes it poorly, see /work/shared/FACTS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from model.audio import resample
from model.common.audio_constants import SPEECH_SR


@dataclass(frozen=True)
class Fact:
    question: str
    answers: tuple[str, ...]  # accepted keywords (case-insensitive, whole words)


FACTS: tuple[Fact, ...] = (
    Fact("What is the capital of France?", ("paris",)),
    Fact("What is the capital of Italy?", ("rome",)),
    Fact("What is the capital of Japan?", ("tokyo",)),
    Fact("What is the capital of Spain?", ("madrid",)),
    Fact("What is the capital of England?", ("london",)),
    Fact("What is the capital of Germany?", ("berlin",)),
    Fact("How many days are in a week?", ("seven", "7")),
    Fact("How many legs does a spider have?", ("eight", "8")),
    Fact("How many legs does a dog have?", ("four", "4")),
    Fact("What is two plus two?", ("four", "4")),
    Fact("What is three times three?", ("nine", "9")),
    Fact("What color is the sky on a clear day?", ("blue",)),
    Fact("What color is grass?", ("green",)),
    Fact("What is the largest planet in our solar system?", ("jupiter",)),
    Fact("Which planet is known as the red planet?", ("mars",)),
    Fact("What do bees make?", ("honey",)),
    Fact("What is frozen water called?", ("ice",)),
    Fact("What is the opposite of hot?", ("cold",)),
    Fact("How many months are in a year?", ("twelve", "12")),
    Fact("What animal says moo?", ("cow", "cows")),
    Fact("Who wrote Romeo and Juliet?", ("shakespeare",)),
    Fact("What is the largest ocean on Earth?", ("pacific",)),
    Fact("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    Fact("What is the boiling point of water in Celsius?", ("100", "hundred")),
)

USER_VOICES: tuple[str, ...] = ("joe", "flite:kal16", "flite:awb", "flite:rms", "flite:slt")


def correct(answer: str, fact: Fact) -> bool:
    text = answer.lower()
    return any(re.search(rf"\b{re.escape(a)}\b", text) for a in fact.answers)


def speak(text: str, voice: str) -> np.ndarray:
    """One utterance in a bundled voice, as 16 kHz float32."""
    from model.components.tts import load_voice  # noqa: PLC0415

    v = load_voice(voice)
    audio = v.synthesize(text)
    return resample(audio, v.sample_rate, SPEECH_SR).astype(np.float32)


def spoken_questions(voices: tuple[str, ...] = USER_VOICES, facts: tuple[Fact, ...] = FACTS
                     ) -> list[tuple[Fact, str, np.ndarray]]:
    """Every question in every voice: [(fact, voice, 16 kHz audio)]."""
    from model.components.tts import load_voice  # noqa: PLC0415

    out = []
    for name in voices:
        v = load_voice(name)
        for f in facts:
            a = resample(v.synthesize(f.question), v.sample_rate, SPEECH_SR).astype(np.float32)
            out.append((f, name, a))
    return out


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits, reference words) between two texts, case and punctuation ignored."""
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)
