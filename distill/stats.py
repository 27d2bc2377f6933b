"""`parley distill stats DIR`: what a trace folder holds (committed traces only; reads JSON, not audio)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from model.common.errors import ParleyError

STAGES = ("user_speech", "asr", "llm", "agent_tts")


def compute_stats(root: Path) -> dict:
    from distill import store

    root = Path(root)
    if not (root / store.SHARDS).is_dir():
        raise ParleyError(f"{root} is not a trace folder (no {store.SHARDS}/ inside)")
    shards, corrupt, open_shards = 0, [], 0
    seen: set[int] = set()
    dup = 0
    split, case, voice_fam, kinds, timing_src = Counter(), Counter(), Counter(), Counter(), Counter()
    user_s = agent_s = 0.0
    turns = 0
    stage_ms: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    models: Counter = Counter()
    for p in store.shard_paths(root):
        shards += 1
        s = store.scan_shard(p)
        if s.error:
            corrupt.append(f"{p.name}: {s.error}")
        if not s.sealed and not s.error:
            open_shards += 1
        dup += s.duplicates
        for i, rec in s.traces.items():
            if i in seen:
                dup += 1
                continue
            seen.add(i)
            split[rec["split"]] += 1
            case[rec["case"]] += 1
            voice_fam[rec["user_voice"].split(":")[0]] += 1
            models[rec["models"].get("llm", "?")] += 1
            stage_ms["total"].append(rec["timings_ms"]["total"])
            for t in rec["turns"]:
                turns += 1
                kinds[t["kind"]] += 1
                timing_src[t.get("timing_source", "none")] += 1
                user_s += t["user_dur_s"]
                agent_s += t.get("agent_dur_s") or 0.0
                for k, v in t["timings_ms"].items():
                    stage_ms.setdefault(k, []).append(v)
    pct = {k: {q: round(float(np.percentile(v, q)), 1) for q in (50, 90, 99)} | {"n": len(v)}
           for k, v in stage_ms.items() if v}
    return {
        "dir": str(root), "shards": shards, "open_shards": open_shards, "corrupt_shards": corrupt,
        "quarantined": sorted(p.name for p in (root / store.QUARANTINE).glob("*.tar.*") if not p.name.endswith(".txt"))
        if (root / store.QUARANTINE).is_dir() else [],
        "traces": len(seen), "duplicates": dup, "turns": turns,
        "hours_user": round(user_s / 3600, 3), "hours_agent": round(agent_s / 3600, 3),
        "split": dict(split), "case": dict(case), "user_voice_family": dict(voice_fam),
        "turn_kind": dict(kinds), "word_timing_source": dict(timing_src),
        "stage_ms_percentiles": pct, "llm": dict(models),
        "missing_below_max_index": (max(seen) + 1 - len(seen)) if seen else 0,
    }


def format_stats(st: dict) -> str:
    lines = [f"{st['dir']}: {st['traces']} traces ({st['turns']} turns) in {st['shards']} shard(s)"
             f" ({st['open_shards']} open), {st['duplicates']} duplicate(s)",
             f"audio: {st['hours_user']:.3f} h user, {st['hours_agent']:.3f} h agent"]
    for k in ("split", "case", "user_voice_family", "turn_kind", "word_timing_source"):
        tot = sum(st[k].values()) or 1
        lines.append(f"{k}: " + ", ".join(f"{a} {b} ({100 * b / tot:.0f}%)" for a, b in sorted(st[k].items())))
    lines.append("wall time (ms)             p50      p90      p99      n   (stages per turn, total per trace)")
    for k, v in st["stage_ms_percentiles"].items():
        lines.append(f"  {k:<22} {v[50]:>8.1f} {v[90]:>8.1f} {v[99]:>8.1f} {v['n']:>6}")
    if st["missing_below_max_index"]:
        lines.append(f"gaps: {st['missing_below_max_index']} index(es) below the highest are missing (failed or not yet made)")
    for c in st["corrupt_shards"]:
        lines.append(f"CORRUPT: {c}")
    for q in st["quarantined"]:
        lines.append(f"quarantined: {q}")
    return "\n".join(lines)
