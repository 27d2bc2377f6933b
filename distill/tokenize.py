"""`parley distill tokenize DIR --codec weights/codec`: trace audio -> codec-token shards (tokens.py).

Resumable: a trace shard that already has its token shard (same source size and codec) is
skipped; shards still being written are skipped unless --include-open (then redone each time).
``--follow --until FILE``: beside a running generator, encode each shard once it is sealed (a pass
every ``--poll-s``) until FILE exists, then a last pass; a trainer may read the folder meanwhile
(`train --follow`): each .npz is in place before the manifest, rewritten atomically, names it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from model.common.errors import ParleyError
from codec.io import codec_id, silence_codes
from distill import store
from distill.tokens import FORMAT

log = logging.getLogger(__name__)


def _encode(codec, x: np.ndarray, sr: int):
    import torch

    from model.audio import resample

    if len(x) == 0:
        return np.zeros((codec.cfg.n_q, 0), np.uint16)
    if sr != codec.sample_rate:
        x = resample(x, sr, codec.sample_rate)
    dev = next(codec.parameters()).device
    with torch.inference_mode():
        c = codec.encode(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(dev))[0]  # (K, T)
    return c.cpu().numpy().astype(np.uint16)


class ClipBatcher:
    """Collects the clips of a shard, then encodes them in length-sorted, zero-padded batches of at
    most ``batch_s`` seconds (padded). The codec is causal with zero end-padding, so a clip's codes
    do not depend on what follows it: each is cut back to ceil(len / hop) frames, the frames the
    one-by-one path gives (equal on CPU, tested; a GPU may round a code differently). 0: one by one."""

    def __init__(self, codec, batch_s: float = 0.0) -> None:
        self.codec, self.batch_s = codec, batch_s
        self.clips: list[np.ndarray] = []

    def add(self, x: np.ndarray, sr: int) -> int:
        """-> the clip's slot (an empty clip gets -1: no codes)."""
        from model.audio import resample

        if len(x) == 0:
            return -1
        if sr != self.codec.sample_rate:
            x = resample(x, sr, self.codec.sample_rate)
        self.clips.append(np.ascontiguousarray(x, dtype=np.float32))
        return len(self.clips) - 1

    def run(self) -> list[np.ndarray]:
        """-> codes (K, frames) uint16 per slot."""
        import torch

        if self.batch_s <= 0:
            return [_encode(self.codec, x, self.codec.sample_rate) for x in self.clips]
        hop, dev = self.codec.hop_length, next(self.codec.parameters()).device
        out: list[np.ndarray | None] = [None] * len(self.clips)
        order = sorted(range(len(self.clips)), key=lambda i: len(self.clips[i]))
        limit = int(self.batch_s * self.codec.sample_rate)
        while order:
            n_max, group = len(self.clips[order[-1]]), []
            while order and (len(group) + 1) * n_max <= max(limit, n_max):  # longest first
                group.append(order.pop())
            wav = torch.zeros(len(group), n_max)  # (B, L) zero-padded at the end
            for r, i in enumerate(group):
                wav[r, : len(self.clips[i])] = torch.from_numpy(self.clips[i])
            with torch.inference_mode():
                codes = self.codec.encode(wav.to(dev)).cpu().numpy()  # (B, K, ceil(L / hop))
            for r, i in enumerate(group):
                out[i] = codes[r, :, : -(-len(self.clips[i]) // hop)].astype(np.uint16)
        return out  # type: ignore[return-value]


def tokenize(root: Path, codec_path: Path, out: Path | None = None, with_clean: bool = False,
             include_open: bool = False, device: str = "cpu", batch_s: float = 0.0, follow: bool = False,
             until: Path | None = None, poll_s: float = 10.0) -> dict:
    """``batch_s`` > 0: encode the clips of a shard in batches of that many padded seconds (GPU).
    ``follow``: keep encoding shards as the generator seals them, a pass every ``poll_s`` seconds,
    until the file ``until`` exists (the generator has ended), then one last pass."""
    import torch

    from codec import load_codec

    root = Path(root)
    if follow and (until is None or include_open):
        raise ParleyError("--follow needs --until FILE (written when the generator ends) and no --include-open")
    while follow and not (root / store.SHARDS).is_dir() and not Path(until).exists():
        time.sleep(poll_s)  # the generator has not made its folder yet
    if not (root / store.SHARDS).is_dir():
        raise ParleyError(f"{root} is not a trace folder (no {store.SHARDS}/ inside)")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    codec = load_codec(codec_path, device=device)
    cid = codec_id(codec_path)
    if codec.cfg.bins > 65536:
        raise ParleyError("codec has more than 65536 bins: uint16 token shards cannot hold it")
    tdir = Path(out) if out else root / "tokens"
    tdir.mkdir(parents=True, exist_ok=True)
    mpath = tdir / "manifest.json"
    man = json.loads(mpath.read_text()) if mpath.exists() else {}
    if man and man.get("codec_id") != cid:
        log.warning("%s was made with another codec: re-tokenizing everything", tdir)
        man = {}
    man.update(format=FORMAT, codec=codec.cfg.to_dict(), codec_path=str(codec_path), codec_id=cid,
               frame_rate=codec.frame_rate, n_q=codec.cfg.n_q, bins=codec.cfg.bins,
               silence=[int(v) for v in silence_codes(codec)], source=str(root.resolve()))
    man.setdefault("shards", {})
    t0 = time.time()
    total = {"shards_tokenized": 0, "turns": 0, "open_shards_skipped": 0, "passes": 0}
    while True:
        last = not follow or Path(until).exists()  # read before the pass: the last one sees every shard sealed
        done, skipped, turns = _pass(root, tdir, man, codec, with_clean, include_open, batch_s)
        total.update(shards_tokenized=total["shards_tokenized"] + done, turns=total["turns"] + turns,
                     open_shards_skipped=skipped, passes=total["passes"] + 1)
        if follow and done:
            log.info("tokens: +%d shard(s) (+%d turns); %d shards, %d turns in %s", done, turns,
                     len(man["shards"]), sum(v.get("turns", 0) for v in man["shards"].values()), tdir)
        if last:
            break
        time.sleep(poll_s)
    store.write_json_atomic(mpath, man)
    if not follow:
        del total["passes"]
    return {"tokens": str(tdir), **total, "shards_total": len(man["shards"]), "seconds": round(time.time() - t0, 1)}


def _pass(root: Path, tdir: Path, man: dict, codec, with_clean: bool, include_open: bool,
          batch_s: float) -> tuple[int, int, int]:
    """Encode every sealed shard not in ``man`` yet (and open ones with ``include_open``); each
    .npz, then the manifest, is written atomically. -> (shards done, open shards skipped, turns)."""
    done = skipped = turns_total = 0
    mpath = tdir / "manifest.json"
    for p in store.shard_paths(root):
        prev = man["shards"].get(p.name)
        try:
            if (prev and prev.get("sealed") and prev.get("source_bytes") == p.stat().st_size
                    and (tdir / prev["file"]).exists()):
                continue  # sealed shards never change: no need to read it again
            s = store.scan_shard(p)
        except FileNotFoundError:  # a resuming generator moved a corrupt shard to quarantine/
            continue
        if s.error:
            log.warning("%s is corrupt (%s): not tokenized", p.name, s.error)
            continue
        if not s.sealed and not include_open:
            skipped += 1
            continue
        if s.sealed and prev and prev.get("source_bytes") == s.size and (tdir / prev["file"]).exists():
            continue
        arrays, meta = _tokenize_shard(p, codec, codec.frame_rate, with_clean, batch_s)
        fname = p.stem + ".npz"
        tmp = tdir / f".{fname}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            buf = io.BytesIO()
            np.savez(buf, **arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, tdir / fname)
        man["shards"][p.name] = {"file": fname, "source_bytes": s.size, "sealed": s.sealed,
                                 "traces": len(s.traces), "turns": len(meta),
                                 "frames_user": int(arrays["user"].shape[1]), "frames_agent": int(arrays["agent"].shape[1])}
        store.write_json_atomic(mpath, man)  # a trainer reading it sees only complete .npz files
        done += 1
        turns_total += len(meta)
        log.info("tokenized %s: %d turns", p.name, len(meta))
    return done, skipped, turns_total


def _tokenize_shard(path: Path, codec, fps: float, with_clean: bool, batch_s: float = 0.0) -> tuple[dict, list[dict]]:
    K = codec.cfg.n_q
    enc = ClipBatcher(codec, batch_s)
    slots: dict[str, list[int]] = {"user": [], "agent": [], "user_clean": []}
    meta: list[dict] = []
    seen: set[int] = set()
    fields = ("user_audio", "user_clean_audio", "agent_audio") if with_clean else ("user_audio", "agent_audio")
    for kind, val in store.walk_shard(path, want_audio=True):
        if kind != "trace":
            continue
        rec, files = val  # type: ignore[misc]
        if rec["index"] in seen:
            continue
        seen.add(rec["index"])
        key = rec["key"]
        names = [f"{key}.{t[f]}.flac" for t in rec["turns"] for f in fields if t.get(f)]
        try:  # decode the trace's clips first: one libsndfile cannot read leaves the trace out, not the shard
            clips = {n: store.decode_flac(files[n]) for n in names}
        except RuntimeError as e:  # soundfile.LibsndfileError (run 3: one such clip stopped tokenize)
            log.warning("%s: trace %s left out: a clip does not decode (%s)", path, rec["index"], e)
            continue
        history: list[list[str]] = []
        for j, t in enumerate(rec["turns"]):
            slots["user"].append(enc.add(*clips[f"{key}.{t['user_audio']}.flac"]))
            if with_clean:
                slots["user_clean"].append(enc.add(*clips[f"{key}.{t['user_clean_audio']}.flac"]))
            if t.get("agent_audio"):
                slots["agent"].append(enc.add(*clips[f"{key}.{t['agent_audio']}.flac"]))
            else:
                slots["agent"].append(-1)

            def fr(s):
                return None if s is None else round(s * fps, 2)

            meta.append({
                "key": key, "index": rec["index"], "turn": j, "split": rec["split"], "case": rec["case"],
                "kind": t["kind"], "user_voice": rec["user_voice"], "user_text": t["user_text"],
                "asr_text": t["asr_text"], "reply_text": t["reply_text"], "reply_heard": t.get("reply_heard"),
                "interrupted_at_frame": fr(t.get("interrupted_at_s")),
                "overlap_prev_at_frame": fr(t.get("overlap_prev_at_s")),
                "word_frames": [[w, fr(a), fr(b)] for w, a, b in t.get("word_timings") or []],
                "timing_source": t.get("timing_source"), "history": [list(h) for h in history],
                "teacher": t.get("teacher"),
            })
            if t["reply_text"]:
                history.append([t["asr_text"], t.get("reply_heard") or t["reply_text"]])
    codes = enc.run()
    empty = np.zeros((K, 0), np.uint16)
    parts = {name: [codes[i] if i >= 0 else empty for i in idx] for name, idx in slots.items()}
    arrays: dict[str, np.ndarray] = {}
    for name, lst in parts.items():
        if name == "user_clean" and not with_clean:
            continue
        lens = [a.shape[1] for a in lst]
        arrays[name] = np.concatenate(lst, axis=1) if lst else np.zeros((K, 0), np.uint16)
        arrays[name + "_off"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return arrays, meta
