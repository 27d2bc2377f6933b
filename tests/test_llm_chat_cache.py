"""The conversation KV cache (model.text_generator.ChatState): only new tokens are prefilled,
and greedy replies are the same tokens as a full re-prefill of the whole history."""

from __future__ import annotations

import pytest
import torch

from model.components.llm import SPOKEN_SYSTEM_PROMPT, LocalChatLLM
from model.gguf import load_gguf
from model.text_generator import ChatState, TextGenerator

pytestmark = pytest.mark.slow

QUESTIONS = ["Hi, who are you?", "What is the capital of France?", "And of Germany?", "Name a fruit."]


@pytest.fixture(scope="module")
def llm() -> LocalChatLLM:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = load_gguf(None, dtype=torch.float32)  # one dtype: prefill and decode run the same weights
    yield LocalChatLLM(TextGenerator(model, tok))
    torch.set_num_threads(threads)


def _conversation(llm: LocalChatLLM, state: ChatState | None) -> tuple[list[list[int]], list[int]]:
    history = [{"role": "system", "content": SPOKEN_SYSTEM_PROMPT}]
    replies, reused = [], []
    for q in QUESTIONS:
        history.append({"role": "user", "content": q})
        toks = [s.token for s in llm.stream_steps(history, max_new_tokens=24, temperature=0.0, state=state)]
        replies.append(toks)
        reused.append(state.reused if state else 0)
        history.append({"role": "assistant", "content": llm.tokenizer.decode(toks, skip_special=True).strip()})
    return replies, reused


def test_kept_cache_gives_the_same_greedy_tokens_as_full_prefill(llm: LocalChatLLM) -> None:
    full, _ = _conversation(llm, None)
    state = llm.new_state()
    cached, reused = _conversation(llm, state)
    assert cached == full
    assert reused[0] == 0 and all(r > 0 for r in reused[1:])
    assert reused == sorted(reused)  # every turn reuses the whole earlier conversation


def test_changed_history_reprefills_from_the_first_difference(llm: LocalChatLLM) -> None:
    state = llm.new_state()
    a = [{"role": "user", "content": "What is the capital of France?"}]
    b = [{"role": "user", "content": "What is the capital of Spain?"}]
    ref = llm.chat(b, max_new_tokens=12, temperature=0.0)
    llm.chat(a, max_new_tokens=12, temperature=0.0, state=state)
    n_a = len(llm.tokenizer.encode_chat(a))
    assert llm.chat(b, max_new_tokens=12, temperature=0.0, state=state) == ref
    assert 0 < state.reused < n_a  # the shared system prompt + "What is the capital of"
    # a barge-in closes the stream early: the state still matches its cache
    it = llm.stream_chat(a, max_new_tokens=12, temperature=0.0, state=state)
    next(it)
    it.close()
    assert llm.chat(b, max_new_tokens=12, temperature=0.0, state=state) == ref


def test_end_of_turn_score_separates_complete_from_cut_questions(llm: LocalChatLLM) -> None:
    from model.components.eou import end_of_turn_prob

    for cut, full in [("What is the capital of", "What is the capital of France?"),
                      ("How many legs does", "How many legs does a spider have?")]:
        p_cut, p_full = end_of_turn_prob(llm, cut), end_of_turn_prob(llm, full)
        assert p_cut < 0.01 < 0.1 < p_full, (cut, p_cut, p_full)  # below the old threshold (eou_head.OLD_THRESHOLD)
    assert end_of_turn_prob(llm, "  ") == 0.0
