"""Trace storage and the generate driver with fake stages: resume, kill -9, determinism, bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from distill import store
from distill.pipeline import content_view
from distill.runner import GenConfig, generate

ROOT = Path(__file__).resolve().parent.parent
FAKE = GenConfig(seed=7, stages="fake")


def _records(d: Path) -> dict[int, dict]:
    return {rec["index"]: rec for rec, _ in store.iter_traces(d, want_audio=False)}


def _content(d: Path) -> dict[int, tuple]:
    """index -> (record without timings, sha256 of every audio member): what determinism promises."""
    out = {}
    for rec, _ in store.iter_traces(d, want_audio=False):
        out[rec["index"]] = (json.dumps(content_view(rec), sort_keys=True),
                             tuple(sorted((k, v["sha256"]) for k, v in rec["files"].items())))
    return out


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "voice", "distill", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_generate_resume_extends_without_duplicates(tmp_path: Path) -> None:
    d = tmp_path / "t"
    s1 = generate(d, 9, FAKE, shard_traces=4, progress=False)
    assert s1["written"] == 9
    s2 = generate(d, 14, FAKE, shard_traces=4, progress=False)
    assert (s2["already_done"], s2["written"]) == (9, 5)
    recs = _records(d)
    assert sorted(recs) == list(range(14))
    for p in store.shard_paths(d):  # every shard is a closed, valid tar
        s = store.scan_shard(p)
        assert s.sealed and s.error is None and s.duplicates == 0
        with tarfile.open(p) as tf:
            assert tf.getnames()[-1].endswith(".json")
    man = json.loads((d / "manifest.json").read_text())
    assert [r["already_done"] for r in man["runs"]] == [0, 9]


def test_determinism_across_runs_and_worker_counts(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 8, FAKE, workers=1, progress=False)
    generate(b, 8, FAKE, workers=2, shard_traces=3, progress=False)  # other order, other shards
    ca, cb = _content(a), _content(b)
    assert sorted(ca) == list(range(8)) and ca == cb
    other = tmp_path / "c"
    generate(other, 8, GenConfig(seed=8, stages="fake"), progress=False)
    assert _content(other) != ca


def test_truncation_at_any_byte_recovers_committed_traces(tmp_path: Path) -> None:
    """Every possible cut of an unsealed shard (what kill -9 leaves) recovers to its committed prefix."""
    src = tmp_path / "src"
    generate(src, 3, FAKE, shard_traces=10, progress=False)
    shard = store.shard_paths(src)[0]
    full = shard.read_bytes()[: -len(store.EOA)]  # as it was before sealing
    ends, off = [], 0  # byte offset after each committed trace
    recs = sorted(_records(src).values(), key=lambda r: r["index"])
    while off < len(full):
        ti = tarfile.TarInfo.frombuf(full[off : off + 512], "utf-8", "strict")
        off += 512 + ti.size + (-ti.size % 512)
        if ti.name.endswith(".json"):
            ends.append(off)
    assert len(ends) == 3
    cuts = sorted(set(range(0, len(full) + 1, 4099)) | {e + k for e in ends for k in (-1, 0, 1, 512)} | {len(full)})
    for cut in cuts:
        if cut > len(full):
            continue
        d = tmp_path / f"cut{cut}"
        (d / "shards").mkdir(parents=True)
        (d / "shards" / shard.name).write_bytes(full[:cut])
        inv = store.recover(d)
        expect = sum(e <= cut for e in ends)
        assert not inv.quarantined, cut
        assert sorted(inv.done) == [r["index"] for r in recs[:expect]], cut
        if expect:  # sealed and readable by tar itself
            with tarfile.open(d / "shards" / shard.name) as tf:
                assert len([n for n in tf.getnames() if n.endswith(".json")]) == expect
        else:
            assert not (d / "shards" / shard.name).exists()
        shutil.rmtree(d)


def test_kill9_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Real subprocesses killed with SIGKILL mid-run; the final folder equals an uninterrupted run."""
    d, ref = tmp_path / "killed", tmp_path / "ref"
    n = 40
    args = ["generate", "--out", str(d), "--n", str(n), "--seed", "7", "--stages", "fake:0.01",
            "--shard-traces", "6", "--no-progress"]
    rng = random.Random(1)
    kills = 0
    for _ in range(4):
        before = sum(sh.stat().st_size for sh in store.shard_paths(d)) if (d / "shards").exists() else 0
        p = _cli(*args, start_new_session=True)
        t0 = time.time()  # wait until this run writes, then kill at a random moment
        while p.poll() is None and time.time() - t0 < 30:
            if (d / "shards").exists() and sum(sh.stat().st_size for sh in store.shard_paths(d)) > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        for sh in store.shard_paths(d) if (d / "shards").exists() else []:
            assert store.scan_shard(sh).error is None, sh  # a cut tail at most, never corruption
    assert kills >= 2
    mid = _records(d) if (d / "shards").exists() else {}
    assert 0 < len(mid) < n, "the kills should land mid-run"
    p = _cli(*args)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["already_done"] >= len(mid) and summary["already_done"] + summary["written"] == n
    st = store.recover(d)
    assert sorted(st.done) == list(range(n)) and st.duplicates == 0 and not st.quarantined
    generate(ref, n, FAKE, progress=False)
    assert _content(d) == _content(ref)


def test_corrupt_shard_is_quarantined_loudly_and_regenerated(tmp_path: Path, caplog) -> None:
    d = tmp_path / "t"
    generate(d, 10, FAKE, shard_traces=5, progress=False)
    victim = store.shard_paths(d)[0]
    lost = set(store.scan_shard(victim).traces)
    data = bytearray(victim.read_bytes())
    data[3000:3040] = b"x" * 40  # damage inside the first trace
    victim.write_bytes(bytes(data))
    assert store.scan_shard(victim).error
    with caplog.at_level("WARNING"):
        s = generate(d, 10, FAKE, shard_traces=5, progress=False)
    assert victim.name in s["quarantined"] and s["written"] == len(lost)
    assert any("corrupt" in r.message and victim.name in r.message for r in caplog.records)
    q = list((d / "quarantine").iterdir())
    assert any(p.name.endswith(".why.txt") for p in q) and len(q) == 2
    assert sorted(_records(d)) == list(range(10))
    assert _content(d) == _content(_fresh(tmp_path, 10))


def _fresh(tmp_path: Path, n: int) -> Path:
    d = tmp_path / "fresh"
    generate(d, n, FAKE, progress=False)
    return d


def test_bad_output_dir_and_settings_give_clear_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = _cli("generate", "--out", str(blocker / "sub"), "--n", "2", "--stages", "fake")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "cannot write to output folder" in err and "Traceback" not in err
    p = _cli("generate", "--out", str(blocker), "--n", "2", "--stages", "fake")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "not a folder" in err
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        p = _cli("generate", "--out", str(ro), "--n", "2", "--stages", "fake")
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and "cannot write" in err
    d = tmp_path / "t"
    generate(d, 2, FAKE, progress=False)
    from model.common.errors import ParleyError

    with pytest.raises(ParleyError, match="seed"):
        generate(d, 3, GenConfig(seed=8, stages="fake"), progress=False)
    with store.DirLock(d), pytest.raises(ParleyError, match="another"):
        generate(d, 3, FAKE, progress=False)


def test_stats_cli(tmp_path: Path) -> None:
    d = tmp_path / "t"
    generate(d, 12, FAKE, shard_traces=5, progress=False)
    p = _cli("stats", str(d), "--json")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    st = json.loads(out)
    assert st["traces"] == 12 and st["duplicates"] == 0 and not st["corrupt_shards"]
    assert sum(st["case"].values()) == 12 and st["hours_user"] > 0
    assert {"asr", "llm", "agent_tts", "user_speech"} <= set(st["stage_ms_percentiles"])
