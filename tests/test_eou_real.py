"""The shipped end-of-turn head (weights/eou/) on the bundled SmolLM2: held-out complete requests
end the turn, their cut prefixes do not; the batched training features equal the cascade's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.components.eou import end_features, features_at, normalize, prompt_text
from model.components.eou_head import EouHead, load_eou_scorer
from voice.eou.data import build_dataset, eval_key

pytestmark = pytest.mark.slow

# (complete request, where a user might pause); none of these is in the training data (checked below)
HELD_OUT = (
    ("Can you tell me a short story about a cat", "Can you tell me a short story about"),  # issue 13: old 0.13
    ("I would like to know the time in Tokyo", "I would like to know the time in"),  # issue 13: old 0.05
    ("Please turn on the porch light", "Please turn on the"),
    ("Play some music by the Beatles", "Play some music by the"),
    ("Could you check if the pharmacy is open today", "Could you check if the"),
    ("I'd like to order a large pepperoni pizza", "I'd like to order a large"),
    ("Add bananas to my shopping list", "Add bananas to my"),
    ("Where did I park my car", "Where did I park my"),
)


@pytest.fixture(scope="module")
def llm():  # noqa: ANN201 - the cascade's LLM as it runs (bf16 prefill on CPUs with native bf16)
    from model.components.llm import load_llm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_llm()
    torch.set_num_threads(threads)


def test_held_out_requests_end_the_turn_and_their_cuts_do_not(llm) -> None:  # noqa: ANN001
    head = load_eou_scorer()
    assert isinstance(head, EouHead)  # the cascade's default scorer is the shipped head
    trained = {eval_key(" ".join(u.words)) for u in build_dataset().utterances}
    for full, cut in HELD_OUT:
        assert eval_key(full) not in trained and eval_key(cut) not in trained, full
        p_full, p_cut = head.score(llm, full), head.score(llm, cut)
        assert p_cut < 0.2 < head.threshold <= p_full, (full, p_full, cut, p_cut)
    assert head.score(llm, " ?! ") == 0.0
    # the agent's last reply as context leaves a clear case clear
    ctx = "Sure, I can help with music. What would you like?"
    assert head.score(llm, "Play some music by the", ctx) < 0.2 < head.threshold <= head.score(
        llm, "Play some music by the Beatles", ctx)


def test_one_batched_forward_gives_every_prefix_as_scored_alone(llm) -> None:  # noqa: ANN001
    """Training reads every cut of an utterance from one right-padded, batched forward
    (eou.features_at); the cascade scores one text with its own forward (eou.end_features)."""
    texts = ["Play some music by the Beatles", "Where did I park my car"]
    ids, pos, singles = [], [], []
    for t in texts:
        words = normalize(t).split()
        full = llm.tokenizer.encode(prompt_text(" ".join(words)))
        p = []
        for k in (2, 4, len(words)):
            pre = llm.tokenizer.encode(prompt_text(" ".join(words[:k])))
            assert full[: len(pre)] == pre  # byte-level BPE: a word-boundary prefix tokenizes as a prefix
            p.append(len(pre) - 1)
            singles.append(end_features(llm, " ".join(words[:k])))
        ids.append(full)
        pos.append(p)
    h, m = features_at(llm, ids, pos, batch_size=2)
    head = load_eou_scorer()
    p_batch = head.prob(np.concatenate([h, m[:, None]], axis=1))
    p_single = head.prob(np.stack([np.append(hs, ms) for hs, ms in singles]))
    np.testing.assert_allclose(m, [ms for _, ms in singles], atol=0.05)  # bf16: batch shapes round a little differently
    np.testing.assert_allclose(p_batch, p_single, atol=0.01)
