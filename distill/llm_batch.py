"""Batched teacher decoding: many chat replies at once on one Llama (the GPU machine's LLM stage).

Each row keeps its own sampling RNG (seeded as the one-by-one path), repetition history,
incremental detokenizer and stop rule, so a row decodes the same tokens as
``TextGenerator.generate`` would alone, up to float rounding of batched matmuls (equal on CPU
fp32 in the tests). Rows are right-padded in the prefill: a padded slot lies after the row's
prompt and is overwritten by its own decoded token before any query can see it (causal mask).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from model.sampling import SamplingParams, log_softmax, sample_next

_SENT_END = re.compile(r"[.!?](?:\s|$)")


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]
    seed: int


@dataclass(frozen=True)
class ChatSettings:
    """The teacher's decoding settings (distill.stages uses the same numbers one by one)."""

    max_new_tokens: int = 64
    temperature: float = 0.5
    top_p: float = 0.9
    max_sentences: int = 2  # stop a row after its 2nd sentence end


@torch.inference_mode()
def generate_batch(model, prompts: list[list[int]], params: list[SamplingParams], max_new_tokens: int,
                   stop_ids: set[int], done_fn=None, logprobs: bool = True,
                   prefill_model=None, threads: int = 0) -> list[list[tuple[int, float | None]]]:
    """prompts: B id lists -> per row [(token, logprob)], stopping at a stop id, after
    ``max_new_tokens`` or when ``done_fn(row, tokens)`` says so. ``prefill_model``: the same
    weights in another dtype for the prompts (as ``TextGenerator``). ``threads``: rows sampled on
    this many threads (numpy releases the GIL in the heavy parts; each row keeps its own RNG, so
    the tokens do not depend on it); 0: min(8, cores)."""
    B = len(prompts)
    if B == 0:
        return []
    lens = [len(p) for p in prompts]
    P = max(lens)
    dev = model.tok_embeddings.weight.device
    cache = model.new_cache(B, min(model.cfg.max_seq_len, P + max_new_tokens + 1))
    ids = torch.zeros((B, P), dtype=torch.long, device=dev)  # (B, P) right-padded with id 0
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p, device=dev)
    pm = prefill_model or model
    h = pm(ids, positions=torch.zeros(B, dtype=torch.long, device=dev), cache=cache, return_hidden=True)  # (B, P, d)
    last = h[torch.arange(B, device=dev), torch.tensor(lens, device=dev) - 1]  # (B, d)
    logits = pm.output(last[:, None])  # (B, 1, V)
    rngs = [np.random.default_rng(p.seed) for p in params]
    hist = [list(p) for p in prompts]
    out: list[list[tuple[int, float | None]]] = [[] for _ in range(B)]
    alive = [True] * B
    pos = torch.tensor(lens, dtype=torch.long, device=dev)  # (B,) next position per row
    pool = ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) if B >= 16 else None

    def draw(i: int, rows: np.ndarray) -> tuple[int, float | None]:
        tok = sample_next(rows[i], params[i], hist[i][-params[i].repetition_window:], rngs[i])
        return tok, (float(log_softmax(rows[i])[tok]) if logprobs else None)

    try:
        for _ in range(max_new_tokens):
            rows = logits[:, -1].float().cpu().numpy()  # (B, V)
            live = [i for i in range(B) if alive[i]]
            drawn = dict(zip(live, pool.map(lambda i: draw(i, rows), live) if pool else (draw(i, rows) for i in live)))
            nxt = torch.zeros(B, dtype=torch.long)
            for i in live:
                tok, lp = drawn[i]
                if tok in stop_ids:
                    alive[i] = False
                    continue
                out[i].append((tok, lp))
                hist[i].append(tok)
                nxt[i] = tok
                if done_fn is not None and done_fn(i, out[i]):
                    alive[i] = False
            if not any(alive):
                break
            logits = model(nxt[:, None].to(dev), positions=pos, cache=cache)  # (B, 1, V)
            pos = pos + 1
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def chat_batch(chat, requests: list[ChatRequest], cs: ChatSettings = ChatSettings()) -> list[tuple[str, dict]]:
    """LocalChatLLM + requests -> [(reply text, {"tokens", "logprobs"})], as RealStages.llm one by one."""
    tok = chat.tokenizer
    prompts = [chat._prompt(r.messages, cs.max_new_tokens) for r in requests]
    params = [SamplingParams(temperature=cs.temperature, top_p=cs.top_p, seed=r.seed,
                             repetition_penalty=chat.repetition_penalty) for r in requests]
    decs = [tok.incremental_decoder(skip_special=True) for _ in requests]
    texts: list[list[str]] = [[] for _ in requests]

    def done(i: int, toks: list) -> bool:  # RealStages.llm's rule: stop after the 2nd sentence
        piece = decs[i].push(toks[-1][0])
        if piece:
            texts[i].append(piece)
            if piece.rstrip().endswith((".", "!", "?")) and len(_SENT_END.findall("".join(texts[i]))) >= cs.max_sentences:
                return True
        return False

    rows = generate_batch(chat.engine.model, prompts, params, cs.max_new_tokens, set(tok.stop_ids), done,
                          prefill_model=chat.engine.prefill_model)
    out = []
    for i, row in enumerate(rows):
        if not _stopped_by_rule(texts[i], cs):  # a natural end: the detokenizer's tail, as TextGenerator.stream
            tail = decs[i].flush()
            if tail:
                texts[i].append(tail)
        out.append(("".join(texts[i]), {"tokens": [t for t, _ in row],
                                         "logprobs": [round(lp, 4) if lp is not None else None for _, lp in row]}))
    return out


def _stopped_by_rule(parts: list[str], cs: ChatSettings) -> bool:
    return bool(parts) and parts[-1].rstrip().endswith((".", "!", "?")) and \
        len(_SENT_END.findall("".join(parts))) >= cs.max_sentences
