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

import numpy as np

from model.common.audio_constants import SPEECH_SR
from distill import augment
from distill.plan import PLAN_VERSION, REAL_VOICE, TracePlan
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


def generate_trace(plan: TracePlan, stages: Stages) -> TraceResult:
    t_start = time.perf_counter()
    key = f"{plan.index:08d}"
    voice = None if plan.voice == REAL_VOICE else UserVoice.parse(plan.voice)
    history: list[dict] = []
    turns, audio = [], {}
    prev_reply_s = 0.0
    for j, pt in enumerate(plan.turns):
        rng = np.random.default_rng(pt.audio_seed)
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        clean, aug, pauses = _user_speech(stages, voice, pt, rng)
        tm["user_speech"] = _ms(t0)
        t0 = time.perf_counter()
        text1 = stages.asr(aug)
        tm["asr"] = _ms(t0)
        reply_raw, reply, teacher = "", "", None
        if pt.kind not in ("silence", "backchannel"):  # the agent answers real turns only
            msgs = [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": text1}]
            t0 = time.perf_counter()
            reply_raw, teacher = stages.llm(msgs, pt.llm_seed)
            tm["llm"] = _ms(t0)
            reply = clean_reply(reply_raw)
        rec: dict = {
            "kind": pt.kind, "user_text": pt.text, "template": pt.template, "recording": pt.recording,
            "augment": pt.augment.to_dict(), "pauses_s": pauses, "audio_seed": pt.audio_seed,
            "llm_seed": pt.llm_seed, "asr_text": text1, "reply_raw": reply_raw, "reply_text": reply,
            "teacher": teacher,  # the LLM's token ids of reply_raw and their log-probs (local LLM)
            "user_audio": f"t{j}.user", "user_clean_audio": f"t{j}.user_clean", "user_sr": SPEECH_SR,
            "user_dur_s": round(len(aug) / SPEECH_SR, 3),
            "overlap_prev_at_s": round(pt.overlap_prev_at * prev_reply_s, 3) if pt.overlap_prev_at is not None else None,
        }
        audio[f"t{j}.user"] = (aug, SPEECH_SR)
        audio[f"t{j}.user_clean"] = (clean, SPEECH_SR)
        if reply:
            t0 = time.perf_counter()
            x, sr, words, how = stages.agent_tts(reply)
            tm["agent_tts"] = _ms(t0)
            dur = len(x) / sr
            audio[f"t{j}.agent"] = (x, sr)
            rec.update(agent_audio=f"t{j}.agent", agent_sr=sr, agent_dur_s=round(dur, 3), word_timings=words,
                       timing_source=how)
            heard = reply
            if pt.cut_reply_at is not None:
                cut = round(pt.cut_reply_at * dur, 3)
                heard = heard_part(words, cut)
                rec.update(interrupted_at_s=cut, reply_heard=heard)
            history += [{"role": "user", "content": text1}, {"role": "assistant", "content": heard}]
            prev_reply_s = dur
        else:
            rec.update(agent_audio=None, agent_sr=None, agent_dur_s=0.0, word_timings=[], timing_source="none")
            if pt.kind == "silence":
                prev_reply_s = 0.0
        rec["timings_ms"] = tm
        turns.append(rec)
    record = {
        "format": FORMAT, "plan_version": PLAN_VERSION, "key": key, "index": plan.index, "seed": plan.seed,
        "split": plan.split,
        "case": plan.case, "user_voice": plan.voice, "system_prompt": SYSTEM_PROMPT, "models": stages.models,
        "turns": turns, "timings_ms": {"total": _ms(t_start)},
    }
    return TraceResult(record, audio)


def content_view(record: dict) -> dict:
    """The record without wall-clock timings (what determinism promises to reproduce)."""
    r = {k: v for k, v in record.items() if k not in ("timings_ms", "files")}
    r["turns"] = [{k: v for k, v in t.items() if k != "timings_ms"} for t in record["turns"]]
    return r
