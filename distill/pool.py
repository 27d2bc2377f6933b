"""The training pool of `parley distill train --follow`: token folders that grow while the model trains.

A generator and `parley distill tokenize --follow` keep adding token shards. ``TurnPool.refresh``
loads the shards it has not loaded yet and appends their items (a stage's items: turns, or whole
traces for Converse) to ``train`` or ``val``; ``train`` samples from the lists as they are.

Folders given that never grow (the prior sessions' token folders, unpacked by distill.token_pack)
are loaded whole at the first refresh and stay as they are; a folder without a manifest yet (this
session's, before its first shard is tokenized) is skipped until one appears.

Validation is chosen per trace (``is_val_trace``: crc32 of the trace key against ``val_frac``), so
a trace lands on the same side in every reload, resume and run, never on both. The lists only grow:
``val`` keeps its order and ``distill.train`` scores its first 64 items, a fixed set once the pool
holds 64 validation items (before that the scored set grows with each reload).

    reload 0:  shard-00000 shard-00001           -> train [a b d e]   val [c]
    reload 1:  + shard-00002 (sealed since)      -> train [a b d e f]  val [c g]
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.curriculum import Stage, Turn, stage_items
from distill.s2s_data import load_turns
from distill.tokens import load_manifest, token_dir
from model.common.errors import ParleyError
from model.layout import StreamLayout

log = logging.getLogger(__name__)

VAL_SALT = b"parley-val:"  # keeps this rule independent of the plan's own crc32 draws
VAL_BUCKETS = 10_000


def is_val_trace(key: str, frac: float) -> bool:
    """True when trace ``key`` (its 8-digit index) is a validation trace at this fraction."""
    return zlib.crc32(VAL_SALT + key.encode()) % VAL_BUCKETS < round(frac * VAL_BUCKETS)


def item_trace(item: Turn | list[Turn]) -> str:
    """The trace key of a stage item (a turn, or the turns of one trace)."""
    return (item[0] if isinstance(item, list) else item).trace


@dataclass(frozen=True)
class Reload:
    """What one ``refresh`` added."""

    shards: int  # new token shards loaded
    turns: int  # their turns (the plan's train split)
    train: int  # new training items
    val: int  # new validation items
    seconds: float


class TurnPool:
    """Items of token folder(s) that grow between ``refresh`` calls (``train``, ``val``: appended to).

    ``stage``: the curriculum stage whose items are kept (None: every turn). ``encode``: text -> ids
    (default SmolLM2's tokenizer, loaded once)."""

    def __init__(self, data: Sequence[Path], layout: StreamLayout, stage: Stage | None, val_frac: float,
                 gguf: str | None = None, encode: Callable[[str], list[int]] | None = None,
                 every_s: float = 60.0) -> None:
        if not data:
            raise ParleyError("train --follow needs --data (token folders that grow)")
        self.data = [Path(d) for d in data]
        self.layout, self.stage, self.val_frac, self.gguf = layout, stage, val_frac, gguf
        self.encode, self.every_s = encode, every_s
        self.train: list = []
        self.val: list = []
        self.silence: np.ndarray | None = None  # (K,) codes of a silent frame
        self.loaded: list[set[str]] = [set() for _ in self.data]  # trace-shard names per folder
        self.turns = 0
        self.folder_turns = [0 for _ in self.data]  # turns loaded per folder (describe)
        self.seconds = 0.0  # user + agent speech of the loaded turns
        self.codec_id: str | None = None
        self._next = 0.0  # time.monotonic() of the next maybe_refresh

    def refresh(self) -> Reload:
        """Load the shards added to the manifests since the last call."""
        t0 = time.monotonic()
        shards = turns = 0
        n_tr, n_val = len(self.train), len(self.val)
        for i, d in enumerate(self.data):
            if not (token_dir(d) / "manifest.json").exists():
                continue  # not tokenized yet
            man = load_manifest(d)
            cid = str(man.get("codec_id"))
            if self.codec_id not in (None, cid):
                raise ParleyError(f"{d} was tokenized with codec {cid}, the pool with {self.codec_id}")
            self.codec_id = cid
            names = sorted(set(man["shards"]) - self.loaded[i])
            if not names:
                continue
            if self.encode is None:
                from model.gguf import load_tokenizer

                self.encode = load_tokenizer(self.gguf).encode
            got, silence, _ = load_turns(d, self.layout, split="train", encode=self.encode, shards=names)
            self.silence = silence if self.silence is None else self.silence
            items = stage_items(got, self.stage) if self.stage is not None else got
            for it in items:
                (self.val if is_val_trace(item_trace(it), self.val_frac) else self.train).append(it)
            self.loaded[i].update(names)
            shards, turns = shards + len(names), turns + len(got)
            self.turns += len(got)
            self.folder_turns[i] += len(got)
            self.seconds += sum(t.user.shape[1] + t.agent.shape[1] for t in got) / float(man["frame_rate"])
        return Reload(shards, turns, len(self.train) - n_tr, len(self.val) - n_val, time.monotonic() - t0)

    def maybe_refresh(self) -> Reload | None:
        """``refresh`` and log it when ``every_s`` has passed since the last one (train's hook)."""
        if time.monotonic() < self._next:
            return None
        r = self.refresh()
        self._next = time.monotonic() + self.every_s
        log.info("reload: +%d shard(s), +%d turns -> +%d train / +%d val items (%.1f s); pool: %s",
                 r.shards, r.turns, r.train, r.val, r.seconds, self.describe())
        return r

    def describe(self) -> str:
        """One line: items, speech hours, folders."""
        stage = f", stage {self.stage.value}" if self.stage is not None else ""
        per = f" ({' + '.join(map(str, self.folder_turns))})" if len(self.data) > 1 else ""
        return (f"{len(self.train)} train / {len(self.val)} val items{stage} from {self.turns} turns{per} in "
                f"{sum(map(len, self.loaded))} shard(s), {self.seconds / 3600:.2f} h of user+agent speech, "
                f"{' + '.join(map(str, self.data))}, codec {self.codec_id}")
