"""The bundled SmolLM2-135M-Instruct GGUF on the project's Llama: weights, tokenizer, generation."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from model.gguf import _unpermute, bundled_gguf_path
from model.sampling import SamplingParams
from model.text_generator import TextGenerator
from model.components.llm import SPOKEN_SYSTEM_PROMPT, LocalChatLLM, load_llm

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a loaded 2-core box are several times slower
    yield load_llm()  # the default: fp16 decoder (+ bf16/fp32 prefill copy on CPU)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(llm: LocalChatLLM):
    return llm.engine.model, llm.tokenizer


def test_hparams_and_weights_match_the_file(loaded) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    model, _ = loaded
    c = model.cfg
    assert (c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert c.rope_theta == 100000.0 and c.tie_embeddings and model.output.weight is model.tok_embeddings.weight
    reader = GGUFReader(str(bundled_gguf_path()))
    t = {t.name: t for t in reader.tensors}
    # the (cached) weights are the file's, dequantized; V unchanged, K un-permuted
    v = torch.from_numpy(dequantize(t["blk.3.attn_v.weight"].data, t["blk.3.attn_v.weight"].tensor_type).copy())
    k = torch.from_numpy(dequantize(t["blk.3.attn_k.weight"].data, t["blk.3.attn_k.weight"].tensor_type).copy())
    torch.testing.assert_close(model.layers[3].attention.wv.weight.float(), v.half().float())
    torch.testing.assert_close(model.layers[3].attention.wk.weight.float(), _unpermute(k, 3).half().float())


def test_unpermute_inverts_llama_cpp_permute() -> None:
    def permute(w: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp convert_hf_to_gguf.py
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.random.default_rng(0).standard_normal((3 * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(_unpermute(torch.from_numpy(permute(w, 3)), 3).numpy(), w)


def test_tokenizer_round_trip_and_specials(loaded) -> None:
    _, tok = loaded
    for text in ["Hello world!", "  two  spaces\nnew line\ttab", "Café, naïve, 東京, emoji 🎉.", "In 2024, 3.14"]:
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("2024")) == 4  # SmolLM2 splits digits one by one
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>")
    assert ids[0] == tok.token_id("<|im_start|>") == 1 and ids[-1] == tok.token_id("<|im_end|>") == tok.eos_id
    assert tok.decode(ids, skip_special=True) == "user\nHi"


def test_chat_template_is_chatml(loaded) -> None:
    _, tok = loaded
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    # without a system message the template of the file adds SmolLM's own
    assert tok.apply_chat_template(msgs[1:]).startswith("<|im_start|>system\nYou are a helpful AI assistant")


def test_incremental_decoding_never_splits_characters(loaded) -> None:
    _, tok = loaded
    text = "Voilà: 東京 🎉🎉 ok"
    ids = tok.encode(text)
    dec = tok.incremental_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p == "") >= 1  # some multi-byte characters span tokens


def test_capital_of_france(llm: LocalChatLLM) -> None:
    answer = llm.chat(FRANCE, max_new_tokens=32, temperature=0.0)
    assert "Paris" in answer
    spoken = llm.chat([{"role": "system", "content": SPOKEN_SYSTEM_PROMPT}, *FRANCE], max_new_tokens=32, temperature=0.0)
    assert "Paris" in spoken


def test_sampling_seed_logprobs_and_stop(llm: LocalChatLLM) -> None:
    q = [{"role": "user", "content": "Write one sentence about a dog."}]
    kw = dict(max_new_tokens=8, temperature=1.0, top_p=0.95)
    a = llm.chat(q, seed=7, **kw)
    assert a == llm.chat(q, seed=7, **kw)
    assert {a, llm.chat(q, seed=8, **kw), llm.chat(q, seed=9, **kw)} != {a}  # sampling does sample
    steps = list(llm.stream_steps(FRANCE, max_new_tokens=24, temperature=0.0, logprobs=True))
    assert 0 < len(steps) < 24  # stopped at <|im_end|>, which is not yielded
    assert all(s.token != llm.tokenizer.eos_id for s in steps)
    lps = np.array([s.logprob for s in steps])
    assert (lps <= 0).all() and lps.mean() > -1.0  # greedy picks are likely tokens


def test_repetition_penalty_reduces_repeats(llm: LocalChatLLM) -> None:
    q = [{"role": "user", "content": "Tell me about the ocean."}]

    def most_repeated(rp: float) -> int:
        steps = llm.stream_steps(q, max_new_tokens=24, temperature=0.0, repetition_penalty=rp)
        return Counter(s.token for s in steps).most_common(1)[0][1]

    # greedy without a penalty says "a vast and mysterious realm" twice within 24 tokens
    assert most_repeated(1.5) < most_repeated(1.0)


def test_concurrent_calls_equal_serial(llm: LocalChatLLM) -> None:
    qs = [FRANCE, [{"role": "user", "content": "Name a color."}]]
    serial = [llm.chat(q, max_new_tokens=16, temperature=0.0) for q in qs]
    results: list[str | None] = [None, None]

    def run(i: int) -> None:
        results[i] = llm.chat(qs[i], max_new_tokens=16, temperature=0.0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == serial


def test_engine_prefill_equals_full_forward(loaded) -> None:
    model, tok = loaded
    ids = tok.encode_chat(FRANCE)
    with torch.inference_mode():
        full = model(torch.tensor([ids]))[0, -1].float()
        cache = model.new_cache(1, 64)
        a = model(torch.tensor([ids[:10]]), positions=torch.tensor([0]), cache=cache)
        b = model(torch.tensor([ids[10:]]), positions=torch.tensor([10]), cache=cache)[0, -1].float()
    assert int(full.argmax()) == int(b.argmax())
    assert (full - b).abs().max() < 0.1 * full.abs().max()
    assert TextGenerator(model, tok).model is model and SamplingParams().repetition_penalty > 1


def test_long_conversations_drop_the_oldest_turns(llm: LocalChatLLM) -> None:
    from model.llama import Llama, LlamaConfig
    from model.common.errors import ParleyError

    torch.manual_seed(0)
    small = Llama(LlamaConfig(vocab_size=49152, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32,
                              max_seq_len=96)).eval()
    short = LocalChatLLM(TextGenerator(small, llm.tokenizer))
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(10):
        msgs += [{"role": "user", "content": f"Question number {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
    msgs.append({"role": "user", "content": "Last question?"})
    ids = short._prompt(msgs, max_new_tokens=16)
    text = llm.tokenizer.decode(ids)
    assert len(ids) <= 96 - 16
    assert text.startswith("<|im_start|>system\nBe brief.") and "Last question?" in text
    assert "Question number 0" not in text and "Answer 9." in text
    assert len(list(short.stream_chat(msgs, max_new_tokens=16, temperature=0.0))) > 0
    with pytest.raises(ParleyError, match="does not fit"):
        short._prompt([{"role": "user", "content": "word " * 200}], max_new_tokens=16)
