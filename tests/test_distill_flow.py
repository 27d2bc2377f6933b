"""The streaming scheduler of the batched path (distill/flow.py): the TTS processes stay busy (wall
time near pool work / W), records equal the one-by-one path, a failing trace fails alone, the
window and the time budget bound what starts, and SIGTERM seals the open shard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from distill.batched import BatchedExecutor, BatchSpec
from distill.flow import stream_traces
from distill.pipeline import content_view, generate_trace
from distill.plan import make_plan
from distill.stages import FakeStages, StageKind, StagesSpec
from model.common.paths import REPO_ROOT


def _same(a, b) -> None:
    import numpy as np

    assert content_view({**a.record, "models": None}) == content_view({**b.record, "models": None})
    assert sorted(a.audio) == sorted(b.audio)
    assert all(np.array_equal(a.audio[k][0], b.audio[k][0]) for k in a.audio)


@pytest.mark.timeout(120)
def test_stream_keeps_the_pool_busy_and_equals_one_by_one() -> None:
    """fake:0.1 (every TTS item and every batched LLM / ASR call sleeps 0.1 s), 4 TTS processes:
    the wall time approaches the pool's work / 4; the traces equal the one-by-one ones."""
    d, w = 0.1, 4
    plans = [make_plan(7, i, eval_frac=0.2) for i in range(24)]  # every case, multi-turn dialogues
    ex = BatchedExecutor(BatchSpec(StagesSpec(StageKind.FAKE, d), tts_workers=w))
    try:
        for f in [ex.submit_agent("warm up") for _ in range(2 * w)]:  # every process started
            f.result()
        t0 = time.perf_counter()
        got = dict(stream_traces(plans, ex, window=24, llm_batch=8))
        wall = time.perf_counter() - t0
    finally:
        ex.close()
    work = sum(t["timings_ms"].get(k, 0.0) for r in got.values() for t in r.record["turns"]
               for k in ("user_speech", "agent_tts")) / 1000
    assert work > 6  # ~80 sleeping TTS items
    assert wall < 1.3 * work / w + 0.6, (wall, work)  # the stage-by-stage path: ~+15%, more with real stragglers
    for p in plans:
        _same(generate_trace(p, FakeStages()), got[p.index])


class _ThreadExecutor:
    """A StreamExecutor on threads (fake stages), with one poisoned reply."""

    models = {"path": "threads"}

    def __init__(self, workers: int, bad: str) -> None:
        self.workers, self.bad, self.stages = workers, bad, FakeStages()
        self.pool = ThreadPoolExecutor(workers)
        self.llm_rows: list[int] = []

    def submit_user(self, job) -> Future:
        from distill.pipeline import user_speech_job

        return self.pool.submit(lambda: (user_speech_job(self.stages, *job), 1.0))

    def submit_agent(self, text: str) -> Future:
        def run():
            if text == self.bad:
                raise RuntimeError("poisoned")
            return self.stages.agent_tts(text), 1.0
        return self.pool.submit(run)

    def hear(self, clips):
        return [self.stages.asr(a) for a, _ in clips], [1.0] * len(clips)

    def llm(self, reqs):
        self.llm_rows.append(len(reqs))
        return [self.stages.llm(m, s) for m, s in reqs], [1.0] * len(reqs)


def test_a_failing_turn_fails_its_trace_only_and_the_window_bounds_the_flight() -> None:
    plans = [make_plan(3, i) for i in range(30)]
    one = {p.index: generate_trace(p, FakeStages()) for p in plans}
    k = next(i for i in range(30) if one[i].record["turns"][0]["reply_text"])
    bad = one[k].record["turns"][0]["reply_text"]  # trace k's first reply cannot be spoken
    ex = _ThreadExecutor(3, bad)
    taken: list[int] = []

    def lazy():
        for p in plans:
            taken.append(p.index)
            yield p

    out = {}
    for i, r in stream_traces(lazy(), ex, window=5, llm_batch=4):
        assert len(taken) - len(out) <= 5  # never more than the window in flight
        out[i] = r
    ex.pool.shutdown()
    assert sorted(out) == list(range(30)) and max(ex.llm_rows) <= 4
    failed = sorted(i for i, r in out.items() if isinstance(r, Exception))
    assert failed == [i for i in range(30) if any(t["reply_text"] == bad for t in one[i].record["turns"])]
    assert k in failed and len(failed) < 30
    for i, r in out.items():
        if i not in failed:
            _same(one[i], r)


@pytest.mark.timeout(120)
def test_generate_with_tts_processes_equals_workers_path(tmp_path: Path) -> None:
    from distill.runner import GenConfig, generate

    recs: dict[str, dict] = {"w": {}, "b": {}}
    cfg = GenConfig(seed=5, stages=StagesSpec(StageKind.FAKE))
    generate(tmp_path / "w", 16, cfg, progress=False, on_write=lambda t: recs["w"].setdefault(t.index, t.record))
    s = generate(tmp_path / "b", 16, cfg, progress=False, on_write=lambda t: recs["b"].setdefault(t.index, t.record),
                 batch=BatchSpec(tts_workers=2, block=5, llm_batch=3))
    assert s["written"] == 16 and s["failed"] == 0 and sorted(recs["w"]) == sorted(recs["b"])
    for i in recs["w"]:
        assert content_view({**recs["w"][i], "models": None}) == content_view({**recs["b"][i], "models": None})


@pytest.mark.timeout(120)
def test_sigterm_seals_the_open_shard_then_resume_completes(tmp_path: Path) -> None:
    from distill import store

    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "voice", "distill", "generate", "--out", str(out), "--n", "200", "--stages",
           "fake:0.02", "--batched", "--device", "cpu", "--tts-workers", "2", "--block", "8", "--no-progress"]
    p = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 60 and not any(s.stat().st_size > 0 for s in store.shard_paths(out)):
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGTERM)
    t_term = time.time()
    assert p.wait(timeout=30) == 143
    assert time.time() - t_term < 10  # queued TTS jobs are dropped, not run
    shards = store.shard_paths(out)
    assert shards and all(store.scan_shard(s).sealed for s in shards)
    mid = sum(len(store.scan_shard(s).traces) for s in shards)
    assert 0 < mid < 200
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr
    seen = [i for s in store.shard_paths(out) for i in store.scan_shard(s).traces]
    assert sorted(seen) == list(range(200))  # resumed, no duplicates
