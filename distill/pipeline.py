"""One trace: plan -> user speech -> ASR -> LLM -> agent speech -> record + audio clips.

The record (JSON) holds every text, the file name of every clip, per-stage wall timings (ms),
the models and the seeds. Audio: ``t{j}.user`` (augmented, what ASR heard, 16 kHz),
``t{j}.user_clean`` (before noise/reverb/gain, 16 kHz), ``t{j}.agent`` (piper, 22.05 kHz).
Everything except ``timings_ms`` is a pure function of (seed, index) and the models.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from model.common.audio_constants import SPEECH_SR
from distill import augment
from distill.plan import PLAN_VERSION, REAL_VOICE, PlannedTurn, TracePlan
from distill.stages import SYSTEM_PROMPT, Stages
from distill.voices import UserVoice

FORMAT = "parley-trace-v1"
_CLAUSE = re.compile(r"(?<=[.!?,;:])\s+")


@dataclass
class TraceResult:
    record: dict
    audio: dict[str, tuple[np.ndarray, int]]  # clip name -> (float32 mono, sample rate)


def clean_reply(text: str, max_sentences: int = 2, max_words: int = 45) -> str:
    """Make an LLM reply speakable: no markdown/emoji/lists, at most 2 sentences / 45 words."""
    t = re.sub(r"[*#_`>|~\[\]{}]+", " ", text)
    t = re.sub(r"^\s*(\d+\.|-|•)\s+", " ", t, flags=re.M)
    t = "".join(ch for ch in t if ord(ch) < 0x2000 or ch in "’‘“”")
    t = re.sub(r"\s+", " ", t).strip()
    sents = re.split(r"(?<=[.!?])\s+", t)
    t = " ".join(sents[:max_sentences])
    words = t.split()
    if len(words) > max_words:
        t = " ".join(words[:max_words]).rstrip(",;:") + "."
    return t


def heard_part(words: list[list], cut_s: float) -> str:
    """The words of a reply fully spoken before `cut_s` (what the interrupting user heard)."""
    return " ".join(w for w, _, e in words if e <= cut_s)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def _user_speech(stages: Stages, voice: UserVoice | None, pt, rng: np.random.Generator):
    """-> (clean 16 kHz, augmented 16 kHz, pauses)."""
    if pt.recording:  # the real speaker: as recorded (plus lead/tail silence), no augmentation
        from model.audio import load_audio
        from model.samples import prompt_wav

        x, _ = load_audio(prompt_wav(pt.recording), SPEECH_SR)
        p = pt.augment
        lead, tail = (np.zeros(int(s * SPEECH_SR), np.float32) for s in (p.lead_s, p.tail_s))
        clean = np.concatenate([lead, x, tail])
        return clean, clean, []
    if pt.kind == "silence":
        x = augment.silence_clip(pt.silence_s, pt.augment, rng)
        return np.zeros_like(x), x, []
    assert voice is not None
    clauses = [c for c in _CLAUSE.split(pt.text) if c.strip()]
    clips = [stages.user_tts(voice, c) for c in clauses]
    joined, pauses = augment.join_with_pauses(clips, rng)
    clean, aug = augment.apply(joined, pt.augment, rng)
    return clean, aug, pauses


class Executor(Protocol):
    """Runs a stage over many items at once; each call -> (results, wall ms per item)."""

    models: dict[str, str]

    def user_speech(self, jobs: list[tuple[str, PlannedTurn]]) -> tuple[list, list[float]]: ...  # (clean, aug, pauses)

    def asr(self, audios: list[np.ndarray]) -> tuple[list[str], list[float]]: ...

    def llm(self, reqs: list[tuple[list[dict], int]]) -> tuple[list[tuple[str, dict | None]], list[float]]: ...

    def agent_tts(self, texts: list[str]) -> tuple[list[tuple[np.ndarray, int, list[list], str]], list[float]]: ...


def user_speech_job(stages: Stages, voice_spec: str, pt: PlannedTurn):
    """One turn's user speech from its own seed (no other state): -> (clean, augmented, pauses)."""
    voice = None if voice_spec == REAL_VOICE else UserVoice.parse(voice_spec)
    return _user_speech(stages, voice, pt, np.random.default_rng(pt.audio_seed))


class SerialExecutor:
    """The one-by-one path: each item through ``stages`` in turn (a worker process, tests)."""

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.models = stages.models

    def _each(self, fn, items: list) -> tuple[list, list[float]]:
        out, ms = [], []
        for it in items:
            t0 = time.perf_counter()
            out.append(fn(*it) if isinstance(it, tuple) else fn(it))
            ms.append(_ms(t0))
        return out, ms

    def user_speech(self, jobs):
        return self._each(lambda v, pt: user_speech_job(self.stages, v, pt), jobs)

    def asr(self, audios):
        return self._each(self.stages.asr, audios)

    def llm(self, reqs):
        return self._each(self.stages.llm, reqs)

    def agent_tts(self, texts):
        return self._each(self.stages.agent_tts, texts)


def generate_trace(plan: TracePlan, stages: Stages) -> TraceResult:
    return generate_traces([plan], SerialExecutor(stages))[0]


class TraceBuilder:
    """One trace between its stages: what each stage gives goes in, the record comes out.

    The order of a trace's steps is fixed (user speech and ASR of every turn, then per turn:
    ``start_turn`` -> LLM -> ``set_reply`` -> agent TTS -> ``finish_turn``); in which order the
    traces take their steps is the scheduler's choice (``generate_traces`` stage by stage,
    ``distill.flow.stream_traces`` as results arrive), so the record is the same either way.
    """

    def __init__(self, plan: TracePlan) -> None:
        self.plan = plan
        n = len(plan.turns)
        self.turn = 0  # the turn under way
        self._speech: list = [None] * n  # (clean, aug, pauses) per turn
        self._heard: list[str] = [""] * n
        self._ms: list[dict[str, float]] = [{} for _ in range(n)]  # user_speech / asr ms per turn
        self.recs: list[dict] = []
        self.audio: dict[str, tuple[np.ndarray, int]] = {}
        self.history: list[dict] = []
        self.prev_reply_s = 0.0

    @property
    def done(self) -> bool:
        return self.turn >= len(self.plan.turns)

    def user_jobs(self) -> list[tuple[str, PlannedTurn]]:
        """(voice, planned turn) of every turn: the user speech jobs (``user_speech_job``)."""
        return [(self.plan.voice, pt) for pt in self.plan.turns]

    def set_user(self, j: int, speech: tuple, ms: float) -> None:
        self._speech[j] = speech
        self._ms[j]["user_speech"] = ms

    def asr_input(self, j: int) -> tuple[np.ndarray, str]:
        """What ASR hears of turn j (the augmented clip) and the planned text (speak-only: the answer)."""
        return self._speech[j][1], self.plan.turns[j].text

    def set_heard(self, j: int, text: str, ms: float) -> None:
        self._heard[j] = text
        self._ms[j]["asr"] = ms

    def start_turn(self) -> tuple[list[dict], int] | None:
        """Open the record of the turn under way; -> its LLM request (messages, seed), or None
        when the agent does not answer this turn (silence, backchannel)."""
        j, pt = self.turn, self.plan.turns[self.turn]
        clean, aug, pauses = self._speech[j]
        self.audio[f"t{j}.user"] = (aug, SPEECH_SR)
        self.audio[f"t{j}.user_clean"] = (clean, SPEECH_SR)
        self.recs.append({
            "kind": pt.kind, "user_text": pt.text, "template": pt.template, "recording": pt.recording,
            "augment": pt.augment.to_dict(), "pauses_s": pauses, "audio_seed": pt.audio_seed,
            "llm_seed": pt.llm_seed, "asr_text": self._heard[j], "reply_raw": "", "reply_text": "",
            "teacher": None,  # the LLM's token ids of reply_raw and their log-probs (local LLM)
            "user_audio": f"t{j}.user", "user_clean_audio": f"t{j}.user_clean", "user_sr": SPEECH_SR,
            "user_dur_s": round(len(aug) / SPEECH_SR, 3),
            "overlap_prev_at_s": (round(pt.overlap_prev_at * self.prev_reply_s, 3)
                                  if pt.overlap_prev_at is not None else None),
            "timings_ms": dict(self._ms[j]),
        })
        if pt.kind in ("silence", "backchannel"):  # real turns only
            return None
        msgs = [{"role": "system", "content": SYSTEM_PROMPT}, *self.history, {"role": "user", "content": self._heard[j]}]
        return msgs, pt.llm_seed

    def set_reply(self, raw: str, teacher: dict | None, ms: float) -> str:
        """The LLM's reply to the turn under way -> the text to speak ("" : nothing to say)."""
        rec = self.recs[self.turn]
        rec.update(reply_raw=raw, reply_text=clean_reply(raw), teacher=teacher)
        rec["timings_ms"]["llm"] = ms
        return rec["reply_text"]

    def finish_turn(self, spoken: tuple | None = None, ms: float | None = None) -> None:
        """Close the turn under way with its agent speech ((audio, sr, words, how), wall ms) or
        without (no reply); the next turn is then under way."""
        rec, pt = self.recs[self.turn], self.plan.turns[self.turn]
        if spoken is not None:
            x, sr, words, how = spoken
            rec["timings_ms"]["agent_tts"] = ms
            dur = len(x) / sr
            self.audio[f"t{self.turn}.agent"] = (x, sr)
            rec.update(agent_audio=f"t{self.turn}.agent", agent_sr=sr, agent_dur_s=round(dur, 3), word_timings=words,
                       timing_source=how)
            heard_reply = rec["reply_text"]
            if pt.cut_reply_at is not None:
                cut = round(pt.cut_reply_at * dur, 3)
                heard_reply = heard_part(words, cut)
                rec.update(interrupted_at_s=cut, reply_heard=heard_reply)
            self.history += [{"role": "user", "content": rec["asr_text"]},
                             {"role": "assistant", "content": heard_reply}]
            self.prev_reply_s = dur
        else:
            rec.update(agent_audio=None, agent_sr=None, agent_dur_s=0.0, word_timings=[], timing_source="none")
            if pt.kind == "silence":
                self.prev_reply_s = 0.0
        rec["timings_ms"] = rec.pop("timings_ms")  # last key, as before
        self.turn += 1

    def result(self, models: dict[str, str], total_ms: float) -> TraceResult:
        """The finished trace; ``total_ms``: its share of the wall time."""
        plan = self.plan
        record = {
            "format": FORMAT, "plan_version": PLAN_VERSION, "key": f"{plan.index:08d}", "index": plan.index,
            "seed": plan.seed, "split": plan.split, "case": plan.case, "user_voice": plan.voice,
            "system_prompt": SYSTEM_PROMPT, "models": models, "turns": self.recs,
            "timings_ms": {"total": round(total_ms, 1)},
        }
        return TraceResult(record, self.audio)


def generate_traces(plans: list[TracePlan], ex: Executor) -> list[TraceResult]:
    """Many traces stage by stage: all user speech, all ASR, then per turn round the LLM and the
    agent TTS of every trace (a reply's history needs the previous round). Same records as one by one."""
    t_start = time.perf_counter()
    bs = [TraceBuilder(plan) for plan in plans]
    jobs = [(b, j) for b in bs for j in range(len(b.plan.turns))]
    speech, sp_ms = ex.user_speech([b.user_jobs()[j] for b, j in jobs])
    heard, asr_ms = ex.asr([aug for _, aug, _ in speech])
    for (b, j), sp, s_ms, h, a_ms in zip(jobs, speech, sp_ms, heard, asr_ms):
        b.set_user(j, sp, s_ms)
        b.set_heard(j, h, a_ms)
    while live := [b for b in bs if not b.done]:
        reqs = [(b, b.start_turn()) for b in live]
        ask = [(b, r) for b, r in reqs if r is not None]
        replies, llm_ms = ex.llm([r for _, r in ask])
        speak = [b for (b, _), (raw, teacher), ms in zip(ask, replies, llm_ms) if b.set_reply(raw, teacher, ms)]
        spoken, tts_ms = ex.agent_tts([b.recs[b.turn]["reply_text"] for b in speak])
        said = {id(b): (x, ms) for b, x, ms in zip(speak, spoken, tts_ms)}
        for b in live:
            b.finish_turn(*said.get(id(b), (None, None)))
    total = _ms(t_start)
    return [b.result(ex.models, total / len(plans)) for b in bs]


def content_view(record: dict) -> dict:
    """The record without wall-clock timings (what determinism promises to reproduce)."""
    r = {k: v for k, v in record.items() if k not in ("timings_ms", "files")}
    r["turns"] = [{k: v for k, v in t.items() if k != "timings_ms"} for t in record["turns"]]
    return r
