"""Continuous batching of LLM replies (model/text_batch.py, voice/engines/batching.py): rows that join
at different steps, leave (stop, limit, cancel) and fail give, row by row, the tokens of
TextGenerator one by one, and leave their conversation's kept cache as the one-by-one path does."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model.llama import Llama, LlamaConfig
from model.sampling import SamplingParams
from model.text_batch import BatchedTextGenerator, RowRequest
from model.text_generator import ChatState, TextGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STOPS = frozenset({0})
GREEDY = SamplingParams(temperature=0.0)


class Collect:
    """A RowSink that keeps the tokens; cancels after `cancel_after` tokens; raises at `fail_at`."""

    def __init__(self, cancel_after: int | None = None, fail_at: int | None = None) -> None:
        self.tokens: list[int] = []
        self.logprobs: list[float | None] = []
        self.ends: list[BaseException | None] = []
        self.cancel_after, self.fail_at = cancel_after, fail_at

    def on_step(self, step) -> None:  # noqa: ANN001
        if self.fail_at is not None and len(self.tokens) == self.fail_at:
            raise RuntimeError("consumer broke")
        if step.token >= 0:
            self.tokens.append(step.token)
            self.logprobs.append(step.logprob)

    def on_end(self, error: BaseException | None) -> None:
        self.ends.append(error)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.tokens) >= self.cancel_after


@pytest.fixture(scope="module")
def tiny() -> TextGenerator:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=256)
    model = Llama(cfg).eval()
    with torch.no_grad():  # larger weights than the init's: sharp attention, so every token of the context counts
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.4)
    return TextGenerator(model)


def _prefix_state(gen: TextGenerator, prefix: list[int]) -> ChatState:
    """As CascadeEngine.warm_up: the fixed start of every conversation prefilled once."""
    st = ChatState()
    list(gen.generate(prefix, 1, GREEDY, state=st))
    return st


def _ref(gen: TextGenerator, prompt: list[int], n: int, params: SamplingParams, state: ChatState,
         take: int | None = None) -> list[int]:
    """One by one; `take`: close the stream after that many tokens (a barge-in)."""
    out = []
    it = gen.generate(prompt, n, params, STOPS, state=state)
    for s in it:
        out.append(s.token)
        if take is not None and len(out) == take:
            it.close()
            break
    return out


def test_rows_join_and_leave_at_any_step_and_equal_one_by_one(tiny: TextGenerator) -> None:
    rng = np.random.default_rng(0)
    prefix = [int(t) for t in rng.integers(3, 96, 20)]
    pst = _prefix_state(tiny, prefix)
    users = [[int(t) for t in rng.integers(3, 96, n)] for n in (5, 13, 2, 40, 7)]
    params = [GREEDY, SamplingParams(temperature=0.8, seed=3), GREEDY,
              SamplingParams(temperature=0.0, repetition_penalty=1.0),
              SamplingParams(temperature=1.0, top_p=0.5, seed=9)]
    limits = [30, 30, 30, 12, 30]
    cancel = {2: 4}  # row 2 is cancelled after 4 tokens (barge-in) while rows after it still decode
    ref_states = [pst.fork() for _ in users]
    ref = [_ref(tiny, prefix + u, n, p, s, cancel.get(i))
           for i, (u, n, p, s) in enumerate(zip(users, limits, params, ref_states))]
    assert [len(r) for r in ref] == [9, 30, 4, 12, 30]  # 0 ends on a stop id, 2 is cancelled, the rest at their limit

    b = BatchedTextGenerator(tiny, max_rows=4)
    sinks = [Collect(cancel_after=cancel.get(i)) for i in range(len(users))]
    states = [pst.fork() for _ in users]
    req = [RowRequest(prefix + u, n, p, s, st, STOPS) for u, n, p, s, st in zip(users, limits, params, sinks, states)]
    b.join([req[0]])
    for _ in range(3):
        b.step()
    b.join([req[1], req[2]])  # two join together, 3 steps later
    b.step()
    b.join([req[3]])
    assert b.n_active == 4 and b.free == 0
    while b.free == 0:
        b.step()
    b.join([req[4]])  # a freed row is reused
    while b.n_active:
        b.step()
    for i, (s, r) in enumerate(zip(sinks, ref)):
        assert s.tokens == r, i
        assert s.ends == [None], i
    assert b.stats.rows_peak == 4 and b.stats.row_steps > b.stats.steps  # steps really were batched
    for st, rst in zip(states, ref_states):  # the kept caches hold what the one-by-one path keeps
        assert st.tokens == rst.tokens and st.reused == rst.reused == len(prefix)
        n = len(st.tokens)
        assert bool(st.cache.valid[0, :n].all()) and not bool(st.cache.valid[0, n:].any())
        torch.testing.assert_close(st.cache.k[:, :, :, :n], rst.cache.k[:, :, :, :n])
        torch.testing.assert_close(st.cache.v[:, :, :, :n], rst.cache.v[:, :, :, :n])

    # next turn of every conversation, all at once: the kept caches are reused and still right
    again = [st.tokens + [int(t) for t in rng.integers(3, 96, 4)] for st in states]
    ref2 = [_ref(tiny, a, 10, GREEDY, s) for a, s in zip(again[:4], ref_states)]
    sinks2 = [Collect() for _ in range(4)]
    b.join([RowRequest(a, 10, GREEDY, s, st, STOPS) for a, s, st in zip(again, sinks2, states)])
    while b.n_active:
        b.step()
    assert [s.tokens for s in sinks2] == ref2
    assert [st.reused for st in states[:4]] == [rs.reused for rs in ref_states[:4]]
    assert all(st.reused >= len(a) - 5 for st, a in zip(states[:4], again))  # only the new tokens were prefilled


def test_device_greedy_picks_the_token_of_sample_next() -> None:
    from model.sampling import sample_next
    from model.text_batch import greedy_rows

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 500)).astype(np.float32)
    logits[:, 7] = logits.max(axis=1) + 0.01  # token 7 wins unless penalized ...
    logits[:, 9] = logits[:, 7] / 1.05  # ... then 9 (positive logits are divided by the penalty)
    logits[5, 11] = logits[5, 7]  # a tie: the first index wins in both
    recent = [[7, 7, 3], [], [7], [1, 2], [7, 9], [4]]
    pen = [1.1, 1.1, 1.0, 1.3, 1.1, 1.1]
    got = greedy_rows(torch.from_numpy(logits).to(torch.float16), recent, pen).tolist()
    want = [sample_next(torch.from_numpy(row).to(torch.float16).float().numpy(), SamplingParams(temperature=0.0,
            repetition_penalty=p), r) for row, r, p in zip(logits, recent, pen)]
    assert got == want and got[0] == 9 and got[1] == 7 and got[5] == 7


def test_many_sampled_rows_on_threads_equal_one_by_one(tiny: TextGenerator) -> None:
    """From SAMPLE_THREADS_FROM sampled rows on, rows are sampled on threads: each row's tokens and
    log-probabilities are still those of TextGenerator alone (each row draws from its own RNG)."""
    from model.text_batch import SAMPLE_THREADS_FROM

    rng = np.random.default_rng(5)
    prompts = [[int(t) for t in rng.integers(3, 96, n)] for n in [5, 17, 9, 1] * 5]  # 20 rows
    params = [SamplingParams(temperature=0.8, top_p=0.9, seed=s) for s in range(len(prompts))]
    assert len(prompts) >= SAMPLE_THREADS_FROM
    b = BatchedTextGenerator(tiny, max_rows=len(prompts), threads=4)
    sinks = [Collect() for _ in prompts]
    b.join([RowRequest(p, 20, sp, s, None, STOPS, logprobs=True) for p, sp, s in zip(prompts, params, sinks)])
    while b.n_active:
        b.step()
    assert b._pool is not None  # the threads did sample
    b.close()
    for p, sp, s in zip(prompts, params, sinks):
        single = list(tiny.generate(p, 20, sp, STOPS, logprobs=True))
        assert s.tokens == [x.token for x in single]
        assert np.allclose(s.logprobs, [x.logprob for x in single], atol=1e-5)


def test_a_failing_request_leaves_the_others_alone(tiny: TextGenerator) -> None:
    rng = np.random.default_rng(1)
    prompts = [[int(t) for t in rng.integers(3, 96, n)] for n in (9, 30)]
    ref = [_ref(tiny, p, 20, GREEDY, ChatState()) for p in prompts]
    b = BatchedTextGenerator(tiny, max_rows=8)
    good = [Collect(), Collect()]
    broken, empty, too_long = Collect(fail_at=3), Collect(), Collect()
    b.join([RowRequest(prompts[0], 20, GREEDY, good[0], ChatState(), STOPS),
            RowRequest([], 20, GREEDY, empty, None, STOPS),
            RowRequest(prompts[1], 20, GREEDY, broken, ChatState(), STOPS),
            RowRequest([5] * 300, 20, GREEDY, too_long, None, STOPS)])
    b.step()
    b.join([RowRequest(prompts[1], 20, GREEDY, good[1], ChatState(), STOPS)])
    while b.n_active:
        b.step()
    assert [g.tokens for g in good] == ref and [g.ends for g in good] == [[None], [None]]
    assert len(broken.tokens) == 3 and broken.tokens == ref[1][:3]
    for s in (broken, empty, too_long):
        assert len(s.ends) == 1 and s.ends[0] is not None


def test_threaded_batcher_streams_text_to_each_session(tiny: TextGenerator) -> None:
    """LLMBatcher (the cascade's worker thread) on a tiny random model with the real tokenizer:
    concurrent submits stream the text of the one-by-one path; cancel ends a reply early."""
    from model.components.llm import LocalChatLLM
    from model.gguf import load_tokenizer
    from voice.engines.batching import LLMBatcher, ReplyOptions

    tok = load_tokenizer()
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                      max_seq_len=512)
    llm = LocalChatLLM(TextGenerator(Llama(cfg).eval(), tok))
    chats = [[{"role": "user", "content": q}] for q in ("Hi there!", "What is the capital of France?", "Count to ten.")]
    opts = ReplyOptions(max_new_tokens=16)
    want = ["".join(llm.stream_chat(c, max_new_tokens=16, temperature=0.0)) for c in chats]
    batcher = LLMBatcher(llm, max_rows=4)
    try:
        got: list[list] = [[] for _ in chats]
        replies = [batcher.submit(c, opts, got[i].append, llm.new_state()) for i, c in enumerate(chats)]
        bad = []
        replies.append(batcher.submit([{"role": "robot", "content": "?"}], opts, bad.append))
        assert all(r.done.wait(30) for r in replies)
        assert ["".join(g[:-1]) for g in got] == want and all(g[-1] is None for g in got)
        assert len(bad) == 2 and isinstance(bad[0], Exception) and bad[1] is None

        first = threading.Event()
        pieces: list = []

        def emit(p: object) -> None:
            pieces.append(p)
            first.set()

        r = batcher.submit(chats[2], ReplyOptions(max_new_tokens=200), emit, llm.new_state())
        assert first.wait(30)
        r.cancel()
        assert r.done.wait(30) and pieces[-1] is None and len(pieces) < 100
    finally:
        batcher.close()


@pytest.mark.gpu
def test_rows_on_cuda_equal_one_by_one(tiny: TextGenerator) -> None:
    """The same on the GPU (fp32: no TF32 in matmuls by default): rows joining at different steps,
    one cancelled, greedy picked on the device, kept caches reused by the next turn."""
    import copy

    gen = TextGenerator(copy.deepcopy(tiny.model).cuda())
    rng = np.random.default_rng(4)
    prompts = [[int(t) for t in rng.integers(3, 96, n)] for n in (6, 25, 3)]
    refs_st = [ChatState() for _ in prompts]
    ref = [_ref(gen, p, 20, GREEDY, s, 5 if i == 1 else None) for i, (p, s) in enumerate(zip(prompts, refs_st))]
    b = BatchedTextGenerator(gen, max_rows=4)
    sinks = [Collect(cancel_after=5 if i == 1 else None) for i in range(3)]
    states = [ChatState() for _ in prompts]
    b.join([RowRequest(prompts[0], 20, GREEDY, sinks[0], states[0], STOPS)])
    b.step()
    b.join([RowRequest(p, 20, GREEDY, s, st, STOPS) for p, s, st in zip(prompts[1:], sinks[1:], states[1:])])
    while b.n_active:
        b.step()
    assert [s.tokens for s in sinks] == ref and [st.tokens for st in states] == [st.tokens for st in refs_st]
    nxt = [st.tokens + [5, 6, 7] for st in states]
    want = [_ref(gen, p, 8, GREEDY, s) for p, s in zip(nxt, refs_st)]
    sinks2 = [Collect() for _ in nxt]
    b.join([RowRequest(p, 8, GREEDY, s, st, STOPS) for p, s, st in zip(nxt, sinks2, states)])
    while b.n_active:
        b.step()
    assert [s.tokens for s in sinks2] == want and [st.reused for st in states] == [st.reused for st in refs_st]


@pytest.mark.slow
def test_smollm2_batched_replies_equal_one_by_one() -> None:
    """The bundled SmolLM2 in fp32 (one dtype: prefill and decode run the same weights): three
    conversations batched, two turns each, give the greedy replies of the one-by-one path."""
    from model.components.llm import SPOKEN_SYSTEM_PROMPT, LocalChatLLM
    from model.gguf import load_gguf
    from voice.engines.batching import LLMBatcher, ReplyOptions

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = load_gguf(None, dtype=torch.float32)
        llm = LocalChatLLM(TextGenerator(model, tok))
        sys = {"role": "system", "content": SPOKEN_SYSTEM_PROMPT}
        turns = [("What is the capital of France?", "And of Italy?"), ("Name a fruit.", "Another one?"),
                 ("How many legs does a cat have?", "And a bird?")]
        one = {i: [sys] for i in range(3)}
        many = {i: [sys] for i in range(3)}
        one_st = [llm.new_state() for _ in turns]
        many_st = [llm.new_state() for _ in turns]
        batcher = LLMBatcher(llm, max_rows=4)
        try:
            for t in range(2):
                for i, q in enumerate(turns):
                    one[i].append({"role": "user", "content": q[t]})
                    many[i].append({"role": "user", "content": q[t]})
                want = [llm.chat(one[i], max_new_tokens=20, temperature=0.0, state=one_st[i]) for i in range(3)]
                got: list[list] = [[] for _ in turns]
                rs = [batcher.submit(many[i], ReplyOptions(20), got[i].append, many_st[i]) for i in range(3)]
                assert all(r.done.wait(120) for r in rs)
                texts = ["".join(g[:-1]) for g in got]
                assert texts == want
                for i in range(3):
                    one[i].append({"role": "assistant", "content": want[i].strip()})
                    many[i].append({"role": "assistant", "content": texts[i].strip()})
            assert "Paris" in want[0] or "Paris" in one[0][2]["content"]
            assert [s.reused for s in many_st] == [s.reused for s in one_st] and min(s.reused for s in many_st) > 20
            assert batcher.gen.stats.rows_peak == 3
        finally:
            batcher.close()
    finally:
        torch.set_num_threads(threads)
