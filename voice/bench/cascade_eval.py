"""Offline evaluations of the cascade's parts on synthetic speech (`parley bench facts`).

facts: the 24 questions of `voice.bench.facts` spoken by several voices -> ASR (the cascade's) ->
the LLM with the cascade's prompt, greedy and sampled; accuracy, words per reply, markdown.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from voice.bench.facts import USER_VOICES, correct, spoken_questions, wer


@dataclass(frozen=True)
class FactsConfig:
    voices: tuple[str, ...] = USER_VOICES
    decodings: tuple[tuple[str, float], ...] = (("greedy", 0.0), ("sampled t=0.6", 0.6))
    seeds: tuple[int, ...] = (0, 1)  # per sampled decoding
    max_new_tokens: int = 48
    out: str | None = None  # JSON report


@dataclass
class _Tally:
    ok: int = 0
    n: int = 0
    words: int = 0
    markdown: int = 0
    wrong: list = field(default_factory=list)


def run_facts(cfg: FactsConfig) -> dict:
    import torch  # noqa: PLC0415

    from voice.engines.cascade import CascadeConfig, CascadeEngine  # noqa: PLC0415

    torch.set_num_threads(1)
    engine = CascadeEngine(CascadeConfig(), tts=object())  # ASR + LLM of the cascade (no TTS)
    clips = spoken_questions(cfg.voices)
    asr_edits = asr_words = 0
    asr_s = []
    tallies = {name: _Tally() for name, _ in cfg.decodings}
    per_voice: dict[str, list[int]] = {}
    for fact, voice, audio in clips:
        t0 = time.perf_counter()
        heard = engine.transcribe(audio)
        asr_s.append(time.perf_counter() - t0)
        e, n = wer(fact.question, heard)
        asr_edits, asr_words = asr_edits + e, asr_words + n
        session = engine.session()
        for name, temp in cfg.decodings:
            for seed in ((None,) if temp == 0 else cfg.seeds):
                reply = engine.llm.chat([*session.messages(), {"role": "user", "content": heard}],
                                        max_new_tokens=cfg.max_new_tokens, temperature=temp, top_p=0.9, seed=seed)
                t = tallies[name]
                good = correct(reply, fact)
                t.ok, t.n, t.words = t.ok + good, t.n + 1, t.words + len(reply.split())
                t.markdown += bool(re.search(r"[*#`]|^\s*[-\d]+[.)]?\s", reply, re.M))
                if temp == 0:
                    per_voice.setdefault(voice, []).append(int(good))
                if not good and len(t.wrong) < 12:
                    t.wrong.append({"voice": voice, "heard": heard, "reply": reply})
    report = {
        "questions": len(clips) // len(cfg.voices), "voices": list(cfg.voices),
        "asr_wer": round(asr_edits / max(asr_words, 1), 4), "asr_ms_mean": round(1000 * sum(asr_s) / len(asr_s)),
        "decodings": {k: {"accuracy": round(t.ok / t.n, 3), "n": t.n, "words_per_reply": round(t.words / t.n, 1),
                          "markdown_replies": t.markdown, "wrong_examples": t.wrong} for k, t in tallies.items()},
        "greedy_accuracy_per_voice": {v: round(sum(x) / len(x), 3) for v, x in per_voice.items()},
    }
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump(report, f, indent=1)
    return report
