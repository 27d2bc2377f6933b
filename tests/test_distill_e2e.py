"""A small run end to end with the real models: Whisper tiny.en, SmolLM2, piper joe, flite users.

Seed 197 makes trace 0 an interruption (flite awb) and trace 1 a single exchange (flite kal16):
voices Whisper understands, so the ASR check below is meaningful.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill import store
from distill.pipeline import content_view, generate_trace
from distill.plan import make_plan
from distill.runner import GenConfig, generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
SEED = 197


def test_small_real_run_end_to_end(tmp_path) -> None:
    from distill.eval import wer  # the speech-model helper's normalizing WER
    from distill.stages import RealStages
    from model.audio import resample

    assert make_plan(SEED, 0).case == "interruption" and make_plan(SEED, 1).case == "single"
    d = tmp_path / "t"
    s = generate(d, 2, GenConfig(seed=SEED), progress=False)
    assert s["written"] == 2 and s["failed"] == 0
    traces = {rec["index"]: (rec, files) for rec, files in store.iter_traces(d)}
    stages = RealStages(threads=1)
    user_wers = []
    for rec, files in traces.values():
        assert rec["models"]["asr"].startswith("whisper") and rec["format"] == "parley-trace-v1"
        for t in rec["turns"]:
            assert {"user_speech", "asr", "llm", "agent_tts"} <= set(t["timings_ms"])
            user_wers.append(wer(t["user_text"], t["asr_text"]))  # augmented speech: some errors
            user, sr = store.decode_flac(files[f"{rec['key']}.{t['user_audio']}.flac"])
            assert sr == 16000 and abs(len(user) / sr - t["user_dur_s"]) < 1e-3
            assert t["reply_text"] and t["teacher"]["tokens"] and all(lp <= 0 for lp in t["teacher"]["logprobs"])
            x, sr = store.decode_flac(files[f"{rec['key']}.{t['agent_audio']}.flac"])
            heard = stages.asr(resample(x, sr, 16000))  # the agent's speech says the reply
            assert wer(t["reply_text"], heard) < 0.5, (t["reply_text"], heard)
            ends = [e for _, _, e in t["word_timings"]]
            assert ends == sorted(ends) and ends[-1] <= t["agent_dur_s"] + 1e-3
    assert np.mean(user_wers) < 0.5, user_wers  # Whisper heard what the synthetic users said
    # the interruption: the history keeps only the words heard before the cut
    t0, t1 = traces[0][0]["turns"]
    assert 0 < t0["interrupted_at_s"] < t0["agent_dur_s"]
    assert t0["reply_heard"] == " ".join(w for w, _, e in t0["word_timings"] if e <= t0["interrupted_at_s"])
    assert len(t0["reply_heard"]) < len(t0["reply_text"]) and t1["overlap_prev_at_s"] == t0["interrupted_at_s"]
    # determinism with the real models: regenerating trace 0 gives the same record and audio
    again = generate_trace(make_plan(SEED, 0), stages)
    rec0 = traces[0][0]
    assert json.dumps(content_view(again.record), sort_keys=True) == json.dumps(content_view(rec0), sort_keys=True)
    for name, (x, sr) in again.audio.items():
        stored, _ = store.decode_flac(traces[0][1][f"{rec0['key']}.{name}.flac"])
        np.testing.assert_allclose(np.clip(x, -1, 1), stored, atol=1 / 32767 + 1e-6)  # FLAC is 16-bit


def test_batched_path_equals_one_by_one_with_real_models() -> None:
    """Whisper batched, SmolLM2 batched (the batched path's float32 model on both paths), piper: the same traces; the
    teacher log-probs (stored at 4 decimals) may differ by one rounding step."""
    from distill.batched import BatchedExecutor, BatchSpec
    from distill.pipeline import SerialExecutor, generate_traces

    plans = [make_plan(5, 0)]  # an interruption: 2 turns, the second LLM call sees the heard history
    ex = BatchedExecutor(BatchSpec(tts_workers=0))
    many = generate_traces(plans, ex)
    one = [generate_traces([p], SerialExecutor(ex._gpu))[0] for p in plans]
    for a, b in zip(one, many):
        ca, cb = content_view({**a.record, "models": None}), content_view({**b.record, "models": None})
        for ta, tb in zip(ca["turns"], cb["turns"]):
            if ta["teacher"]:
                assert np.allclose(ta["teacher"].pop("logprobs"), tb["teacher"].pop("logprobs"), atol=2e-4)
                tb["teacher"].pop("logprobs", None)
        assert ca == cb
        assert all(np.array_equal(a.audio[k][0], b.audio[k][0]) for k in a.audio)
