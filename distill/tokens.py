"""Codec-token shards written by `parley distill tokenize` and their reader.

    DIR/tokens/manifest.json      format, codec config (+ sha256 of its weight files), frame rate,
                                  n_q, bins, ``silence`` (K codes of a silent frame), per-shard info
    DIR/tokens/<shard>.npz        one per trace shard (same stem), written atomically

Each .npz holds the turns of one trace shard, concatenated on the frame axis:
    user       uint16 (K, sum Tu)   codes of the user's speech as the cascade heard it (augmented)
    user_off   int64  (n + 1)       turn i is user[:, user_off[i]:user_off[i+1]]
    agent      uint16 (K, sum Ta)   codes of the agent's reply (piper joe); Ta = 0 if it stays silent
    agent_off  int64  (n + 1)
    user_clean / user_clean_off     (only with --with-clean) the clean user speech
    meta       uint8  JSON list, one dict per turn: key, index, turn, split, case, kind, user_voice,
               user_text, asr_text, reply_text, reply_heard, interrupted_at_frame,
               overlap_prev_at_frame (frames into the previous turn's reply), word_frames
               ([word, start_frame, end_frame] on the codec frame grid, float), timing_source,
               history ([user asr_text, agent heard text] of earlier turns),
               teacher ({"tokens": SmolLM2 ids of the raw reply, "logprobs": log p of each} or null)
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.common.errors import ParleyError

FORMAT = "parley-tokens-v1"


@dataclass
class TokenTurn:
    user: np.ndarray  # (K, Tu) int64
    agent: np.ndarray  # (K, Ta) int64
    meta: dict
    user_clean: np.ndarray | None = None


def token_dir(path: Path) -> Path:
    path = Path(path)
    return path / "tokens" if (path / "tokens" / "manifest.json").exists() else path


def load_manifest(path: Path) -> dict:
    d = token_dir(path)
    m = d / "manifest.json"
    if not m.exists():
        raise ParleyError(f"no token shards in {path} (run `parley distill tokenize` first)")
    man = json.loads(m.read_text())
    if man.get("format") != FORMAT:
        raise ParleyError(f"{m}: not a Parley token manifest (format {man.get('format')!r})")
    return man


def iter_token_turns(path: Path, splits: set[str] | None = None,
                     shards: Collection[str] | None = None) -> Iterator[TokenTurn]:
    """Every tokenized turn under `path` (a trace folder or its tokens/ folder); ``shards``: only
    the turns of these trace shards (names as in the manifest; `train --follow` loads new ones)."""
    d = token_dir(path)
    man = load_manifest(d)
    for name in sorted(man["shards"]):
        if shards is not None and name not in shards:
            continue
        f = d / man["shards"][name]["file"]
        with np.load(f) as z:
            meta = json.loads(z["meta"].tobytes())
            uo, ao = z["user_off"], z["agent_off"]
            user, agent = z["user"].astype(np.int64), z["agent"].astype(np.int64)
            clean = z["user_clean"].astype(np.int64) if "user_clean" in z else None
            co = z["user_clean_off"] if "user_clean" in z else None
        for i, m in enumerate(meta):
            if splits and m["split"] not in splits:
                continue
            yield TokenTurn(user[:, uo[i] : uo[i + 1]], agent[:, ao[i] : ao[i + 1]], m,
                            clean[:, co[i] : co[i + 1]] if clean is not None else None)
