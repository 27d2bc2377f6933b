"""Token shards (``parley distill tokenize``) -> training / eval turns for the direct model.

Each tokenized trace turn becomes one ``Turn``: the user's codes (as the cascade heard them),
the agent's codes (piper joe) and the reply's text tokens, each token placed at the frame where
its word starts in the agent's speech (``word_frames`` from the TTS alignment), so the inner
monologue is aligned to the speech as in Moshi. Silent / backchannel turns (the agent says
nothing) are kept: the model must learn to stay quiet too. Splits come from the trace plan
(held-out voices and prompts are ``eval``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from model.common.errors import ParleyError
from distill.tokens import iter_token_turns, load_manifest
from distill.curriculum import Turn
from model.layout import StreamLayout


def word_tokens(word_frames: list, encode) -> tuple[list[int], list[int]]:
    """[[word, start, end], ...] -> (text tokens, frame of each token relative to the reply start)."""
    toks, frames = [], []
    for i, (word, start, _end) in enumerate(word_frames):
        ids = encode(word if i == 0 else " " + word)
        toks += ids
        frames += [int(start)] * len(ids)
    return toks, frames


def _frame(x) -> int | None:
    return None if x is None else int(x)


def layout_for(data: Path | list[Path], text_card: int) -> StreamLayout:
    man = load_manifest(Path(data[0] if isinstance(data, (list, tuple)) else data))
    n_q = int(man["n_q"])
    return StreamLayout(n_q=n_q, card=int(man["bins"]), text_card=text_card, delays=(0,) * n_q)


def load_turns(data: Path | list[Path], layout: StreamLayout, split: str = "train", limit: int | None = None,
               gguf: str | None = None, encode=None, shards: Collection[str] | None = None,
               keep_foreign: bool = False) -> tuple[list[Turn], np.ndarray, str]:
    """-> (turns, silence codes (K,), description). ``data``: one token folder or several
    (tokenized with the same codec; the turns of folder i >= 1 are named ``i/KEY.TURN``, their trace
    ``i/KEY``: each session's keys start at 00000000). ``encode``: text -> ids (default SmolLM2's tokenizer).
    ``shards``: only these trace shards of the manifest (distill.pool, `train --follow`). Turns whose
    reply is not English (distill.language) are left out unless ``keep_foreign``."""
    if isinstance(data, (list, tuple)):
        parts = [load_turns(d, layout, split, None, gguf, encode, shards, keep_foreign) for d in data]
        ids = {str(load_manifest(Path(d)).get("codec_id")) for d in data}
        if len(ids) > 1:
            raise ParleyError(f"token folders were made with different codecs: {sorted(ids)}")
        for i, p in enumerate(parts[1:], 1):  # sessions reuse trace keys: later folders' turns get "i/"
            for t in p[0]:  # (folder 0 keeps its names: the same eval set from one session to the next)
                t.name, t.trace = f"{i}/{t.name}", f"{i}/{t.trace}"
        turns = [t for p in parts for t in p[0]][: limit or None]
        return turns, parts[0][1], " + ".join(p[2] for p in parts)
    man = load_manifest(Path(data))
    if int(man["n_q"]) != layout.n_q or int(man["bins"]) != layout.card:
        raise ParleyError(f"{data}: tokens have {man['n_q']} x {man['bins']} codes, the model {layout.n_q} x {layout.card}")
    if encode is None:
        from model.gguf import load_tokenizer

        encode = load_tokenizer(gguf).encode
    from distill.language import is_foreign

    turns: list[Turn] = []
    n_silent = n_foreign = 0
    splits = {"eval", "eval_real"} if split == "eval" else {split}  # eval_real: the real speaker
    for tt in iter_token_turns(Path(data), splits=splits, shards=shards):
        m = tt.meta
        if tt.user.shape[1] == 0:
            continue
        if not keep_foreign and tt.agent.shape[1] and is_foreign(m.get("reply_text", "")):
            n_foreign += 1
            continue
        toks, frames = word_tokens(m.get("word_frames") or [], encode) if tt.agent.shape[1] else ([], [])
        n_silent += tt.agent.shape[1] == 0
        voice = m.get("user_voice", "")
        said = (m.get("user_text") or m.get("asr_text") or "").strip()  # real speaker: what Whisper heard
        turns.append(Turn(
            user=tt.user[: layout.n_q], agent=tt.agent[: layout.n_q], reply_tokens=toks, token_frames=frames,
            name=f"{m['key']}.{m['turn']}", reply_text=m.get("reply_text", ""),
            voice="real" if voice.startswith("real:") else "synthetic",  # distill.plan.REAL_VOICE
            user_tokens=encode(said) if said else [], case=m.get("case", ""), trace=str(m.get("key", "")),
            interrupted_at=_frame(m.get("interrupted_at_frame")), overlap_prev_at=_frame(m.get("overlap_prev_at_frame")),
        ))
        if limit and len(turns) >= limit:
            break
    silence = np.asarray(man["silence"][: layout.n_q], dtype=np.int64)
    hours = sum(t.user.shape[1] + t.agent.shape[1] for t in turns) / float(man["frame_rate"]) / 3600
    desc = (f"{len(turns)} {split} turns ({n_silent} silent; {n_foreign} with a reply not in English left out) "
            f"from {data}, {hours:.2f} h of user+agent speech, codec {man.get('codec_id', '?')}")
    return turns, silence, desc
