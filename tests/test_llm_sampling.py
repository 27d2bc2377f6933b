"""Sampling functions and the engine's streaming contract on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.llama import Llama, LlamaConfig
from model.text_generator import TextGenerator
from model.sampling import (SamplingParams, apply_repetition_penalty, filter_top_k_top_p, sample_next,
                            softmax)


def test_top_p_keeps_the_nucleus() -> None:
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(filter_top_k_top_p(logp, 0, 0.75)).tolist() == [True, True, False, False]  # 0.5+0.3
    assert np.isfinite(filter_top_k_top_p(logp, 0, 0.5)).tolist() == [True, False, False, False]
    assert np.isfinite(filter_top_k_top_p(logp, 3, 1.0)).tolist() == [True, True, True, False]


def test_repetition_penalty_lowers_recent_tokens() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    assert apply_repetition_penalty(logits, [0, 1, 1], 2.0).tolist() == [1.0, -2.0, 0.5, 3.0]
    assert logits.tolist() == [2.0, -1.0, 0.5, 3.0]  # input untouched


@pytest.mark.parametrize("top_p,top_k", [(1.0, 0), (0.8, 0), (1.0, 5), (0.9, 20)])
def test_sampler_matches_the_filtered_distribution(top_p: float, top_k: int) -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(100).astype(np.float32) * 2
    p = SamplingParams(temperature=0.8, top_p=top_p, top_k=top_k, repetition_penalty=1.0)
    want = softmax(filter_top_k_top_p(logits / 0.8, top_k, top_p))
    draws = np.array([sample_next(logits, p, [], rng) for _ in range(40000)])
    got = np.bincount(draws, minlength=logits.size) / draws.size
    assert set(np.flatnonzero(got)) <= set(np.flatnonzero(want))  # never outside the kept set
    assert np.abs(got - want).sum() < 0.1  # total variation distance (x2)


def test_sample_next_greedy_and_seeded() -> None:
    logits = np.random.default_rng(1).standard_normal(100).astype(np.float32)
    assert sample_next(logits, SamplingParams(temperature=0), []) == int(logits.argmax())
    p = SamplingParams(temperature=1.0)
    draw = lambda seed: [sample_next(logits, p, [], np.random.default_rng(seed)) for _ in range(5)]  # noqa: E731
    assert draw(1) == draw(1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)


def test_engine_greedy_matches_argmax_of_full_forward() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=40)
    model = Llama(cfg).eval()
    prompt = [3, 1, 4, 1, 5]
    greedy = SamplingParams(temperature=0, repetition_penalty=1.0)
    steps = list(TextGenerator(model).generate(prompt, max_new_tokens=10, params=greedy, logprobs=True))
    assert len(steps) == 10
    seq = list(prompt)
    with torch.no_grad():
        for s in steps:  # recompute every step without a cache
            logits = model(torch.tensor([seq]))[0, -1]
            assert s.token == int(logits.argmax())
            assert abs(s.logprob - float(logits.log_softmax(-1).max())) < 1e-4
            seq.append(s.token)
    toks = [s.token for s in steps]
    stopped = list(TextGenerator(model).generate(prompt, 10, greedy, stop_ids=[toks[3]]))
    assert [s.token for s in stopped] == toks[:toks.index(toks[3])]  # stop id ends it, not yielded
    assert len(list(TextGenerator(model).generate(prompt * 7, 100, greedy))) == 40 - 35  # context limit


@pytest.mark.gpu
def test_engine_on_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)
    model = Llama(cfg).eval()
    greedy = SamplingParams(temperature=0, repetition_penalty=1.0)
    cpu = [s.token for s in TextGenerator(model).generate([3, 1, 4, 1, 5], 20, greedy)]
    gpu = [s.token for s in TextGenerator(model.cuda()).generate([3, 1, 4, 1, 5], 20, greedy)]
    assert gpu == cpu
