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


def generate_traces(plans: list[TracePlan], ex: Executor) -> list[TraceResult]:
    """Many traces stage by stage: all user speech, all ASR, then per turn round the LLM and the
    agent TTS of every trace (a reply's history needs the previous round). Same records as one by one."""
    t_start = time.perf_counter()
    jobs = [(plan.voice, pt) for plan in plans for pt in plan.turns]
    speech, sp_ms = ex.user_speech(jobs)
    heard, asr_ms = ex.asr([aug for _, aug, _ in speech])
    flat = iter(range(len(jobs)))
    idx = [[next(flat) for _ in plan.turns] for plan in plans]  # plan p, turn j -> flat job index
    recs: list[list[dict]] = [[] for _ in plans]
    audio: list[dict] = [{} for _ in plans]
    history: list[list[dict]] = [[] for _ in plans]
    prev_reply_s = [0.0] * len(plans)
    for j in range(max((len(p.turns) for p in plans), default=0)):
        live = [p for p, plan in enumerate(plans) if j < len(plan.turns)]
        for p in live:
            pt, f = plans[p].turns[j], idx[p][j]
            clean, aug, pauses = speech[f]
            audio[p][f"t{j}.user"] = (aug, SPEECH_SR)
            audio[p][f"t{j}.user_clean"] = (clean, SPEECH_SR)
            recs[p].append({
                "kind": pt.kind, "user_text": pt.text, "template": pt.template, "recording": pt.recording,
                "augment": pt.augment.to_dict(), "pauses_s": pauses, "audio_seed": pt.audio_seed,
                "llm_seed": pt.llm_seed, "asr_text": heard[f], "reply_raw": "", "reply_text": "",
                "teacher": None,  # the LLM's token ids of reply_raw and their log-probs (local LLM)
                "user_audio": f"t{j}.user", "user_clean_audio": f"t{j}.user_clean", "user_sr": SPEECH_SR,
                "user_dur_s": round(len(aug) / SPEECH_SR, 3),
                "overlap_prev_at_s": (round(pt.overlap_prev_at * prev_reply_s[p], 3)
                                      if pt.overlap_prev_at is not None else None),
                "timings_ms": {"user_speech": sp_ms[f], "asr": asr_ms[f]},
            })
        ask = [p for p in live if plans[p].turns[j].kind not in ("silence", "backchannel")]  # real turns only
        msgs = [[{"role": "system", "content": SYSTEM_PROMPT}, *history[p], {"role": "user", "content": heard[idx[p][j]]}]
                for p in ask]
        replies, llm_ms = ex.llm([(m, plans[p].turns[j].llm_seed) for m, p in zip(msgs, ask)])
        for p, (raw, teacher), ms in zip(ask, replies, llm_ms):
            recs[p][j].update(reply_raw=raw, reply_text=clean_reply(raw), teacher=teacher)
            recs[p][j]["timings_ms"]["llm"] = ms
        speak = [p for p in ask if recs[p][j]["reply_text"]]
        spoken, tts_ms = ex.agent_tts([recs[p][j]["reply_text"] for p in speak])
        said = dict(zip(speak, zip(spoken, tts_ms)))
        for p in live:
            rec, pt = recs[p][j], plans[p].turns[j]
            if p in said:
                (x, sr, words, how), ms = said[p]
                rec["timings_ms"]["agent_tts"] = ms
                dur = len(x) / sr
                audio[p][f"t{j}.agent"] = (x, sr)
                rec.update(agent_audio=f"t{j}.agent", agent_sr=sr, agent_dur_s=round(dur, 3), word_timings=words,
                           timing_source=how)
                heard_reply = rec["reply_text"]
                if pt.cut_reply_at is not None:
                    cut = round(pt.cut_reply_at * dur, 3)
                    heard_reply = heard_part(words, cut)
                    rec.update(interrupted_at_s=cut, reply_heard=heard_reply)
                history[p] += [{"role": "user", "content": rec["asr_text"]},
                               {"role": "assistant", "content": heard_reply}]
                prev_reply_s[p] = dur
            else:
                rec.update(agent_audio=None, agent_sr=None, agent_dur_s=0.0, word_timings=[], timing_source="none")
                if pt.kind == "silence":
                    prev_reply_s[p] = 0.0
            rec["timings_ms"] = rec.pop("timings_ms")  # last key, as before
    total = _ms(t_start)
    out = []
    for p, plan in enumerate(plans):
        record = {
            "format": FORMAT, "plan_version": PLAN_VERSION, "key": f"{plan.index:08d}", "index": plan.index,
            "seed": plan.seed, "split": plan.split, "case": plan.case, "user_voice": plan.voice,
            "system_prompt": SYSTEM_PROMPT, "models": ex.models, "turns": recs[p],
            "timings_ms": {"total": round(total / len(plans), 1)},
        }
        out.append(TraceResult(record, audio[p]))
    return out


def content_view(record: dict) -> dict:
    """The record without wall-clock timings (what determinism promises to reproduce)."""
    r = {k: v for k, v in record.items() if k not in ("timings_ms", "files")}
    r["turns"] = [{k: v for k, v in t.items() if k != "timings_ms"} for t in record["turns"]]
    return r
