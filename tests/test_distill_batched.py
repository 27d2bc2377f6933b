"""The batched generation path (GPU machine, issue 11) gives the traces of the one-by-one path for
the same (seed, index): TTS worker processes + batched ASR / LLM calls, and batched decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.batched import BatchedExecutor, BatchSpec
from distill.pipeline import content_view, generate_trace, generate_traces
from distill.plan import make_plan
from distill.stages import FakeStages, StageKind, StagesSpec

FAKE = StagesSpec(StageKind.FAKE)


def _same(a, b) -> None:
    assert content_view({**a.record, "models": None}) == content_view({**b.record, "models": None})
    assert sorted(a.audio) == sorted(b.audio)
    for k in a.audio:
        assert a.audio[k][1] == b.audio[k][1] and np.array_equal(a.audio[k][0], b.audio[k][0]), k


@pytest.mark.timeout(120)
def test_batched_equals_one_by_one_fake_stages() -> None:
    plans = [make_plan(7, i, eval_frac=0.2) for i in range(24)]  # every case, multi-turn dialogues
    assert {p.case for p in plans} >= {"single", "dialogue", "interruption"}
    one = [generate_trace(p, FakeStages()) for p in plans]
    ex = BatchedExecutor(BatchSpec(FAKE, tts_workers=2))
    try:
        many = generate_traces(plans[::-1], ex)[::-1]  # any order, two processes
    finally:
        ex.close()
    for a, b in zip(one, many):
        _same(a, b)
    assert "batched" in many[0].record["models"]["path"]


@pytest.mark.timeout(120)
def test_generate_batched_store_equals_workers(tmp_path: Path) -> None:
    from distill.runner import GenConfig, generate

    recs: dict[str, list] = {"w": [], "b": []}
    cfg = GenConfig(seed=3, stages=FAKE)
    generate(tmp_path / "w", 10, cfg, progress=False, on_write=lambda t: recs["w"].append(t.record))
    s = generate(tmp_path / "b", 10, cfg, progress=False, on_write=lambda t: recs["b"].append(t.record),
                 batch=BatchSpec(block=4))
    assert s["written"] == 10 and s["failed"] == 0
    key = lambda r: r["index"]  # noqa: E731
    for a, b in zip(sorted(recs["w"], key=key), sorted(recs["b"], key=key)):
        assert content_view({**a, "models": None}) == content_view({**b, "models": None})


@pytest.fixture(scope="module")
def teacher():  # noqa: ANN201 - model.components.llm.LocalChatLLM
    """A tiny random Llama with the real tokenizer, its output biased towards sentence ends, two
    tokens that split a character (a tail at a natural end) and the stop id: every way a reply ends."""
    from model.components.llm import LocalChatLLM
    from model.gguf import load_tokenizer
    from model.llama import Llama, LlamaConfig
    from model.text_generator import TextGenerator

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                              max_seq_len=256)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.4)  # peaked logits: no near-ties for batched rounding to flip
        head = torch.nn.Linear(32, tok.vocab_size)
        head.weight.copy_(model.output.weight)
        head.bias.zero_()
        head.bias[[tok.encode(c)[0] for c in ".!?"]] = 10.0
        head.bias[[321, 459]] = 10.0  # byte tokens that leave a UTF-8 character open
        head.bias[sorted(tok.stop_ids)] = 9.0
        model.output = head
    return LocalChatLLM(TextGenerator(model, tok))


@pytest.mark.timeout(120)
def test_chat_batch_equals_one_by_one(teacher, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """More requests than rows: they join as rows leave and each reply (text, tokens, log-probs) is
    RealStages.llm's one by one: cut after the 2nd sentence (no tail), a natural end keeps the tail."""
    from types import SimpleNamespace

    import distill.llm_batch as lb
    from distill.stages import RealStages, enough_sentences

    n = 12
    monkeypatch.setattr("distill.stages.LLM_MAX_NEW_TOKENS", n)
    reqs = [lb.ChatRequest([{"role": "user", "content": "Hi there? " * (i % 5 + 1)}], seed=i) for i in range(32)]
    one = [RealStages.llm(SimpleNamespace(chat=teacher), r.messages, r.seed) for r in reqs]
    joins: list[tuple[int, int]] = []
    gens: set = set()
    join = lb.BatchedTextGenerator.join

    def spy(self, rows):  # noqa: ANN001, ANN202
        joins.append((self.n_active, len(rows)))
        gens.add(self)
        return join(self, rows)

    monkeypatch.setattr(lb.BatchedTextGenerator, "join", spy)
    many = lb.chat_batch(teacher, reqs, lb.ChatSettings(max_new_tokens=n), max_rows=16)  # 16 rows: sampled on threads
    assert joins[0] == (0, 16) and any(active > 0 for active, _ in joins[1:])  # joined while others decoded
    assert all(active + k <= 16 for active, k in joins)
    assert len(joins) <= 2 + (len(reqs) - 16) // 4  # later joins wait for 4 free rows (one prefill each)
    for (text, t1), (got, t2) in zip(one, many):
        assert got == text and t2["tokens"] == t1["tokens"]
        assert np.allclose(t2["logprobs"], t1["logprobs"], atol=1e-4)
    cut = [enough_sentences([t]) and len(m["tokens"]) < n for t, m in one]
    tail = [t.endswith("\ufffd") for t, _ in one]  # a pushed piece never ends inside a character
    assert sum(cut) >= 5 and sum(tail) >= 1 and any(len(m["tokens"]) == n for _, m in one)
    # a row is fed each token but its last, and the token before a stop id: a cut row left at once
    fed = sum(len(m["tokens"]) - 1 if c or len(m["tokens"]) == n else len(m["tokens"]) for (_, m), c in zip(one, cut))
    assert len(gens) == 1 and gens.pop().stats.row_steps == fed


def test_reply_sink_drops_the_tail_of_a_cut_reply() -> None:
    from distill.llm_batch import _ReplySink
    from model.text_generator import Step

    s = _ReplySink(max_sentences=2)
    for i, piece in enumerate(["Yes.", " Sure", "!"]):
        assert not s.cancelled()
        s.on_step(Step(i, -0.5, piece))
    s.on_step(Step(-1, None, "\ufffd"))  # the token limit's tail after the rule's last token
    assert s.cancelled() and "".join(s.parts) == "Yes. Sure!" and s.tokens == [0, 1, 2] and s.logprobs == [-0.5] * 3
    natural = _ReplySink(max_sentences=2)
    natural.on_step(Step(7, None, "Hm."))
    natural.on_step(Step(-1, None, "\ufffd"))
    assert not natural.cancelled() and "".join(natural.parts) == "Hm.\ufffd" and natural.tokens == [7]


@pytest.mark.timeout(120)
def test_bench_reports_the_arms() -> None:
    from distill.bench import BenchArm, default_arms, run_bench

    assert [a.name for a in default_arms(8, cores=16, gpu=True)] == ["1 core", "all 16 cores", "16 cores + GPU"]
    assert default_arms(8, cores=16, gpu=True)[2].batch.tts_workers == 15
    assert all(a.batch is not None and a.batch.device == "cpu" for a in default_arms(8, 4, False, speak_only=True))
    table = run_bench(n=4, arms=[BenchArm("1 core"), BenchArm("cores + cpu-batched", 1, BatchSpec(tts_workers=1, block=2))],
                      stages="fake")
    rows = [r for r in table.splitlines() if r.startswith("| 1 core") or r.startswith("| cores + cpu")]
    assert len(rows) == 2 and "audio h/min" in table and "agent speech h/min" in table


@pytest.mark.timeout(120)
def test_speak_only_traces(tmp_path: Path) -> None:
    from distill.runner import GenConfig, generate
    from model.common.errors import ParleyError

    recs: list[dict] = []
    cfg = GenConfig(seed=4, stages=FAKE, speak_only=True, real_frac=0.0)
    s = generate(tmp_path / "s", 8, cfg, progress=False, on_write=lambda t: recs.append(t.record), batch=BatchSpec(block=4))
    assert s["written"] == 8
    said = [t for r in recs for t in r["turns"] if t["reply_text"]]
    assert said and all(t["asr_text"] == t["user_text"] and t["agent_dur_s"] > 0 and t["word_timings"] for t in said)
    assert all(t["user_dur_s"] == 0.32 for r in recs for t in r["turns"])  # silent user clips
    assert "speak-only" in recs[0]["models"]["path"]
    with pytest.raises(ParleyError, match="batched"):
        generate(tmp_path / "x", 2, cfg, progress=False)
    with pytest.raises(ParleyError, match="real-frac"):
        generate(tmp_path / "y", 2, GenConfig(stages=FAKE, speak_only=True), progress=False, batch=BatchSpec())


def test_batched_codec_tokenization_equals_one_by_one() -> None:
    from codec.model import CodecConfig, ParleyCodec
    from distill.tokenize import ClipBatcher

    torch.manual_seed(0)
    codec = ParleyCodec(CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, lstm=1, n_q=4, bins=64)).eval()
    rng = np.random.default_rng(0)
    clips = [(0.3 * rng.standard_normal(n).astype(np.float32), codec.sample_rate) for n in (900, 4000, 77, 2500, 0)]
    one, many = ClipBatcher(codec, 0.0), ClipBatcher(codec, 6000 / codec.sample_rate)  # 2-3 clips a batch
    s1 = [one.add(*c) for c in clips]
    s2 = [many.add(*c) for c in clips]
    assert s1 == s2 and s1[-1] == -1
    a, b = one.run(), many.run()
    for x, y, (w, _) in zip(a, b, clips):
        assert x.shape == y.shape == (4, -(-len(w) // codec.hop_length)) and np.array_equal(x, y)
