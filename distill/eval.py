"""Evaluation of the direct speech model on held-out turns (`parley distill eval`).

For each held-out turn the generator hears the user's codec frames, then silence, and speaks;
its agent codes are decoded by the codec and transcribed by Whisper. Scores per voice group:

- ``wer``: word error rate of Whisper's transcript of the model's speech vs the teacher's reply;
- ``content``: content-word recall (share of the reply's non-stop-words that the model said);
- ``mono_wer``: Whisper's transcript of the speech vs the inner monologue as reference (the speech
  says its text; the issue's <= 25% target);
- ``mono_vs_teacher``: the inner monologue text vs the teacher's reply;
- ``words``: share of replies that Whisper transcribes as at least one word (intelligibility);
- ``ceiling_wer``: the teacher's own agent codes through the codec and Whisper (what the codec
  allows at best).

A group's WERs are corpus WERs (all edits / all reference words, as ASR reports them); the mean of
per-turn WERs (``*_turn_mean``, the table's second figure) lets one looping Whisper transcript of a
four-word turn ("I'll, I'll, ..." = 1,250 %) outweigh sixty good turns.

Generation runs batched (all turns are sessions of one generator) on GPU or CPU; decoding and
ASR can be split off (``generate`` writes codes, ``score`` reads them) so GPU minutes go to the
model only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from model.layout import undelay_codes

STOP = set(
    "a an the and or but if of to in on at by for with from is are was were be been being am i you he she it we "
    "they me him her us them my your his its our their this that these those there here what which who whom do "
    "does did so as not no yes can could would should will just very really also than then too about up out".split()
)


def normalize(text: str) -> str:
    text = text.lower().replace("'", "")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9 ]+", " ", text)).strip()


def wer(ref: str, hyp: str) -> float:
    """Word error rate on normalized words (jiwer; 1.0 for an empty hypothesis of a non-empty reference)."""
    import jiwer

    r, h = normalize(ref), normalize(hyp)
    if not r.split():
        return float(bool(h.split()))
    return float(jiwer.wer(r, h)) if h.split() else 1.0


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Edits over all (ref, hyp) pairs / reference words (pairs with an empty reference left out)."""
    pairs = [(normalize(r), h) for r, h in pairs if normalize(r)]
    if not pairs:
        return float("nan")
    edits = sum(len(r.split()) * wer(r, h) for r, h in pairs)  # wer = edits / words of r
    return edits / sum(len(r.split()) for r, _ in pairs)


def content_recall(ref: str, hyp: str) -> float:
    ref_c = {w for w in normalize(ref).split() if w not in STOP}
    if not ref_c:
        return 1.0
    return len(ref_c & set(normalize(hyp).split())) / len(ref_c)


@dataclass
class Generated:
    name: str
    group: str
    reply: str  # teacher reply text
    mono_tokens: list[int]  # inner-monologue text tokens (PAD removed)
    agent_codes: np.ndarray  # (K, T) frame grid, from the first frame after the user's turn


def generate(model, turns, groups: list[str], silence: np.ndarray, extra_frames: int = 25,
             device=None, batch: int = 64, seed: int = 0, sampling=None, progress: bool = False) -> list[Generated]:
    """Run every turn through the streaming generator (batched); returns the agent's codes."""
    import torch
    from tqdm import tqdm

    from model.generator import SpeechGenerator
    from model.speech_sampling import SpeechSamplingParams

    torch.manual_seed(seed)
    layout = model.cfg.layout
    out: list[Generated] = []
    for b0 in range(0, len(turns), batch):
        chunk = turns[b0 : b0 + batch]
        n_frames = [t.user.shape[1] + t.agent.shape[1] + extra_frames for t in chunk]
        T = max(n_frames)
        gen = SpeechGenerator(model, max_batch=len(chunk), max_frames=T + 1,
                              sampling=sampling or SpeechSamplingParams(), device=device)
        slots = [gen.join() for _ in chunk]
        text = np.full((len(chunk), T), layout.text_pad)
        audio = np.zeros((len(chunk), layout.n_q, T), dtype=np.int64)
        for t in tqdm(range(T), desc=f"generate turns {b0 + 1}-{b0 + len(chunk)} of {len(turns)}", unit="frame",
                      disable=not progress, dynamic_ncols=True, mininterval=5):
            frames = {}
            for i, (s, tr) in enumerate(zip(slots, chunk)):
                if t < n_frames[i]:
                    frames[s] = tr.user[:, t] if t < tr.user.shape[1] else silence
            res = gen.step(frames)
            for i, s in enumerate(slots):
                if s in res:
                    text[i, t] = res[s].text
                    audio[i, :, t] = res[s].audio
        for i, tr in enumerate(chunk):
            start = tr.user.shape[1]
            grid = undelay_codes(audio[i, :, : n_frames[i]], layout)[:, start:]
            mono = [int(x) for x in text[i, start : n_frames[i]] if x < layout.text_card]
            out.append(Generated(tr.name, groups[b0 + i], tr.reply_text, mono, grid))
    return out


def score(items: list[Generated], codec, asr, detokenize, teacher_codes: dict[str, np.ndarray] | None = None,
          progress: bool = False) -> dict:
    """Decode, transcribe and score; returns {"rows": per item, "groups": {group: means}}."""
    import torch
    from tqdm import tqdm

    rows = []
    for it in tqdm(items, desc="decode + Whisper", unit="turn", disable=not progress, dynamic_ncols=True):
        hyp = ""
        if it.agent_codes.shape[-1] > 0:
            with torch.no_grad():
                wav = codec.decode(torch.as_tensor(it.agent_codes)[None].to(next(codec.parameters()).device))
            hyp = asr.transcribe(wav[0, 0].float().cpu().numpy())
        mono = detokenize(it.mono_tokens)
        row = {
            "name": it.name, "group": it.group, "reply": it.reply, "transcript": hyp, "monologue": mono,
            "wer": wer(it.reply, hyp), "content": content_recall(it.reply, hyp),
            "mono_wer": wer(mono, hyp) if normalize(mono) else float("nan"),  # the speech says its text
            "mono_vs_teacher": wer(it.reply, mono), "words": float(bool(normalize(hyp))),
        }
        if teacher_codes is not None and it.name in teacher_codes and teacher_codes[it.name].shape[-1] > 0:
            with torch.no_grad():
                tw = codec.decode(torch.as_tensor(teacher_codes[it.name])[None].to(next(codec.parameters()).device))
            row["ceiling_transcript"] = asr.transcribe(tw[0, 0].float().cpu().numpy())
            row["ceiling_wer"] = wer(it.reply, row["ceiling_transcript"])
        rows.append(row)
    groups: dict[str, dict] = {}
    for g in sorted({r["group"] for r in rows}) + ["all"]:
        sel = [r for r in rows if g == "all" or r["group"] == g]
        keys = ["wer", "content", "mono_wer", "mono_vs_teacher", "words", "ceiling_wer"]
        means = {k: float(np.nanmean([r[k] for r in sel if k in r])) if any(k in r for r in sel) else None for k in keys}
        corpus = {"wer": corpus_wer([(r["reply"], r["transcript"]) for r in sel]),
                  "mono_wer": corpus_wer([(r["monologue"], r["transcript"]) for r in sel]),
                  "mono_vs_teacher": corpus_wer([(r["reply"], r["monologue"]) for r in sel])}
        if any("ceiling_wer" in r for r in sel):
            corpus["ceiling_wer"] = corpus_wer([(r["reply"], r["ceiling_transcript"]) for r in sel if "ceiling_wer" in r])
        groups[g] = {"n": len(sel), **means, **corpus, **{f"{k}_turn_mean": means[k] for k in corpus}}
    return {"rows": rows, "groups": groups}


def table(result: dict) -> str:
    lines = ["WERs: corpus / mean of turns", "",
             "| voices | n | WER vs teacher | content recall | monologue vs speech WER | monologue vs teacher WER | "
             "transcribed as words | codec+ASR ceiling WER |", "|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None or v != v else f"{100 * v:.1f}%"  # noqa: E731
    two = lambda m, k: f"{f(m.get(k))} / {f(m.get(k + '_turn_mean'))}"  # noqa: E731
    for g, m in result["groups"].items():
        lines.append(f"| {g} | {m['n']} | {two(m, 'wer')} | {f(m['content'])} | {two(m, 'mono_wer')} | "
                     f"{two(m, 'mono_vs_teacher')} | {f(m['words'])} | {two(m, 'ceiling_wer')} |")
    return "\n".join(lines)
