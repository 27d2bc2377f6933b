"""Cross-session batching of the cascade, on CPU (`CascadeConfig(batch=True)`; default on CUDA only):
the batched Whisper pass gives the words of one-by-one transcription on real and synthetic speech
and a bad clip fails alone; the engine streams, through the LLM batcher, the reply the one-by-one
LLM gives, for sessions answered at once, and a barge-in takes the reply's row out of the loop."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import torch

from components_util import asr, needs_prompts, speech
from model.common.errors import ParleyError
from voice.engines.base import AgentAudio, AgentText, UserTurn
from voice.engines.cascade import CascadeConfig, CascadeEngine


class FakeASR:
    def transcribe(self, audio: np.ndarray) -> str:
        return "What is the capital of France?" if audio.max() > 0 else "Hello there, who are you?"


class FakeTTS:
    sample_rate = 16000

    def synthesize(self, text: str) -> np.ndarray:
        return np.full(1600, 0.1, np.float32)


def _tiny_llm():  # noqa: ANN202 - LocalChatLLM: a 2-layer random Llama with the real SmolLM2 tokenizer
    from model.components.llm import LocalChatLLM
    from model.gguf import load_tokenizer
    from model.llama import Llama, LlamaConfig
    from model.text_generator import TextGenerator

    tok = load_tokenizer()
    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                      max_seq_len=1024)
    return LocalChatLLM(TextGenerator(Llama(cfg).eval(), tok))


def _turn(loud: bool) -> UserTurn:
    t = time.monotonic()
    return UserTurn(1, np.full(16000, 0.1 if loud else 0.0, np.float32), t, t)


def test_batching_is_on_for_cuda_only_unless_forced() -> None:
    assert not CascadeConfig().batching and CascadeConfig(device="cuda").batching
    assert CascadeConfig(batch=True).batching and not CascadeConfig(device="cuda:0", batch=False).batching


def test_engine_with_batching_streams_the_one_by_one_reply_and_barge_in_frees_the_row() -> None:
    async def main() -> None:
        llm = _tiny_llm()
        e = CascadeEngine(CascadeConfig(batch=True, max_new_tokens=24), asr=FakeASR(), llm=llm, tts=FakeTTS())
        assert e.asr_batcher is not None and e.llm_batcher is not None
        e.warm_up()
        sessions = [e.session(), e.session()]

        async def ask(s, loud: bool) -> str:  # noqa: ANN001
            return "".join([ev.text async for ev in s.respond(_turn(loud)) if isinstance(ev, AgentText)])

        got = await asyncio.gather(ask(sessions[0], True), ask(sessions[1], False))  # two sessions at once
        for s, text in zip(sessions, got):
            one = e.prefix_state.fork()
            want = "".join(llm.stream_chat(s.messages(), max_new_tokens=24, temperature=0.0, state=one))
            assert text == want and len(text) > 10
            assert s.llm_state.reused == one.reused > 90  # the fixed start was not prefilled again
            assert s.llm_state.tokens == one.tokens
        assert e.asr_batcher.stats.items == 3  # warm-up + the two turns

        agen = sessions[0].respond(_turn(True))  # barge-in after the first piece
        async for ev in agen:
            if isinstance(ev, (AgentText, AgentAudio)):
                break
        await agen.aclose()
        t0 = time.monotonic()
        while e.llm_batcher.gen.n_active and time.monotonic() - t0 < 2:
            await asyncio.sleep(0.01)
        assert e.llm_batcher.gen.n_active == 0
        await e.close()

    asyncio.run(main())


@pytest.mark.slow
@needs_prompts
def test_batched_whisper_pass_equals_one_by_one_and_a_bad_clip_fails_alone() -> None:
    from voice.bench.facts import speak
    from voice.engines.batching import ASRBatcher

    clips = [speech("vm-sorry"), speak("What is the capital of France?", "flite:slt"), speech("auth-incorrect"),
             np.zeros(16000, np.float32)]
    want = [asr().transcribe(c).strip() for c in clips]
    assert "sorry" in want[0].lower() and "capital of france" in want[1].lower() and want[3] == ""
    b = ASRBatcher(asr(), max_batch=8, wait_s=0.05)
    try:
        futs = [b.submit(c) for c in clips]
        assert [f.result(120) for f in futs] == want
        assert (b.stats.batches, b.stats.items) == (1, 4)  # one batched pass
        futs = [b.submit(clips[0]), b.submit(np.zeros((2, 16000), np.float32)), b.submit(clips[2])]
        assert futs[0].result(120) == want[0] and futs[2].result(120) == want[2]
        with pytest.raises(ParleyError, match="mono"):
            futs[1].result(120)
    finally:
        b.close()


@pytest.mark.slow
def test_bench_prints_one_by_one_and_batched_rows(tmp_path) -> None:
    """`parley bench components --cascade-batch 2` (ct2 ASR: the quick one here) measures both
    modes in one run, for ASR+LLM and the LLM alone, and the batched LLM rows were decoded together."""
    import json

    from components_util import parley

    out = tmp_path / "cb.json"
    r = parley("bench", "components", "--cascade-batch", "2", "--asr-backend", "ct2", "--max-new-tokens", "12",
               "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(x["stage"], x["mode"]) for x in rows] == [("ASR+LLM", "one by one"), ("ASR+LLM", "batched"),
                                                      ("LLM", "one by one"), ("LLM", "batched")]
    assert all(x["k"] == 2 and x["full_p50_ms"] > 0 and x["pieces_per_s"] > 0 for x in rows)
    mean_rows = float(rows[3]["batches"].split(" x ")[-1].split()[0])  # "LLM 11 steps x 1.6 rows"
    assert mean_rows > 1.0
    assert "| 2 | LLM | batched |" in r.stdout
