"""Streaming text generation on ``Llama``: prefill, then one cached decode step per token.

``TextGenerator.generate`` works on token ids only (as nanochat's engine); ``TextGenerator.stream`` adds the
incremental detokenizer. Each call owns its KV cache and RNG, so one TextGenerator (one copy of the
weights) serves concurrent callers from several threads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from model.llama import KVCache, Llama
from model.sampling import SamplingParams, log_softmax, sample_next
from model.tokenizer import Tokenizer

PREFILL_CHUNK = 512  # prompt tokens per forward during prefill (bounds activation memory)
CACHE_ROUND = 64  # cache length is rounded up to this


class ChatState:
    """A conversation's KV cache kept between calls: the token ids whose keys/values it holds.

    Pass the same state to every ``generate`` of one conversation: only the tokens after the
    longest common prefix of the new prompt and ``tokens`` are prefilled (the first token then
    costs the same at turn 1 and turn 10). One state per conversation; not thread-safe."""

    def __init__(self) -> None:
        self.cache: KVCache | None = None
        self.tokens: list[int] = []  # ids whose keys/values are in the cache, slot = position
        self.reused = 0  # prompt tokens taken from the cache by the last call (for tests, stats)

    def reset(self) -> None:
        self.cache, self.tokens, self.reused = None, [], 0

    def reusable(self, prompt: list[int]) -> int:
        """Prompt tokens whose keys/values the cache holds: the common prefix of ``prompt`` and
        ``tokens``, at most len(prompt) - 1 (the last prompt token is always run, for its logits)."""
        if self.cache is None:
            return 0
        n, limit = 0, min(len(prompt) - 1, len(self.tokens))
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        return n

    def fork(self) -> "ChatState":
        """An independent copy (e.g. a prefilled system prompt shared by new conversations)."""
        new = ChatState()
        new.cache = copy.deepcopy(self.cache)
        new.tokens = list(self.tokens)
        return new


@dataclass(frozen=True)
class Step:
    """One generated token."""

    token: int
    logprob: float | None  # log p(token) under the model (raw logits, before penalty/temperature)
    text: str = ""  # text completed by this token (may be '' mid-character); TextGenerator.stream only


class TextGenerator:
    """``model`` decodes; ``prefill_model`` (optional: the same weights in another dtype) runs the
    prompt. On CPUs with AVX512-BF16, a bf16 prefill is ~3x faster than fp32 and ~10x faster than
    fp16 for a few hundred tokens, while fp16 is the fastest single-token decoder (see README)."""

    def __init__(self, model: Llama, tokenizer: Tokenizer | None = None, prefill_model: Llama | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prefill_model = prefill_model.eval() if prefill_model is not None else None
        if prefill_model is not None and prefill_model.cfg != model.cfg:
            raise ValueError("prefill_model must have the same config as model")

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @torch.inference_mode()
    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int = 128,
        params: SamplingParams = SamplingParams(),
        stop_ids: Iterable[int] = (),
        logprobs: bool = False,
        state: ChatState | None = None,
    ) -> Iterator[Step]:
        """Yield generated tokens one by one; stops after a stop id (not yielded) or max_new_tokens.

        ``state``: keep the KV cache for the next call of the same conversation (see ChatState)."""
        if not prompt:
            raise ValueError("empty prompt")
        max_len = self.model.cfg.max_seq_len
        if len(prompt) >= max_len:
            raise ValueError(f"prompt of {len(prompt)} tokens does not fit the context ({max_len})")
        max_new_tokens = min(max_new_tokens, max_len - len(prompt))
        cache_len = min(max_len, -(-(len(prompt) + max_new_tokens) // CACHE_ROUND) * CACHE_ROUND)
        cache, start0 = self._cache_for(prompt, cache_len, state)
        rng = np.random.default_rng(params.seed)  # None: fresh OS entropy
        stops = set(stop_ids)
        dev = self.device
        ids = torch.tensor(prompt, dtype=torch.long, device=dev)
        pm = self.prefill_model or self.model
        for start in range(start0, len(prompt), PREFILL_CHUNK):  # prefill the new tokens only
            chunk = ids[start:start + PREFILL_CHUNK][None]  # (1, t)
            logits = pm(chunk, positions=torch.tensor([start], device=dev), cache=cache, last_only=True)
        history = list(prompt)
        if state is not None:
            state.tokens = history  # grows with every token fed to the model below
        pos = len(prompt)
        for i in range(max_new_tokens):
            row = logits[0, -1].float().cpu().numpy()  # (V,)
            tok = sample_next(row, params, history[-params.repetition_window:], rng)
            if tok in stops:
                return
            lp = float(log_softmax(row)[tok]) if logprobs else None
            yield Step(tok, lp)
            if i == max_new_tokens - 1 or pos >= cache_len:
                return  # tok is not fed: history (and state.tokens) = exactly what is in the cache
            history.append(tok)
            logits = self.model(torch.tensor([[tok]], device=dev), positions=torch.tensor([pos], device=dev), cache=cache)
            pos += 1

    def _cache_for(self, prompt: list[int], cache_len: int, state: ChatState | None) -> tuple[KVCache, int]:
        """The cache to use and the first prompt position to prefill (0 without a state).

        Reuses the state's cache up to the common prefix (at least the last prompt token is
        always run, to get its logits); grows it (copy) when the conversation outgrew it."""
        if state is None:
            return self.model.new_cache(1, cache_len), 0
        old = state.cache
        n = state.reusable(prompt)
        if old is None or old.max_len < cache_len:
            grown = min(self.model.cfg.max_seq_len, 2 * old.max_len) if old is not None else 0
            cache = self.model.new_cache(1, max(cache_len, grown))
            if old is not None and n:
                cache.k[:, :, :, :n].copy_(old.k[:, :, :, :n])
                cache.v[:, :, :, :n].copy_(old.v[:, :, :, :n])
                cache.slot_pos[:, :n].copy_(old.slot_pos[:, :n])
                cache.truncate(n)
        else:
            cache = old
            cache.truncate(n)  # forget what differs from the new prompt
        state.cache, state.tokens, state.reused = cache, list(prompt[:n]), n
        return cache, n

    def stream(
        self,
        prompt: list[int],
        max_new_tokens: int = 128,
        params: SamplingParams = SamplingParams(),
        stop_ids: Iterable[int] | None = None,
        logprobs: bool = False,
        state: ChatState | None = None,
    ) -> Iterator[Step]:
        """As ``generate``, with ``Step.text`` filled (whole characters only; stop ids = tokenizer's).

        If the stream ends inside a character, a last text-only Step (token -1) carries the rest."""
        if self.tokenizer is None:
            raise RuntimeError("TextGenerator.stream needs a tokenizer")
        dec = self.tokenizer.incremental_decoder(skip_special=True)
        stops = self.tokenizer.stop_ids if stop_ids is None else stop_ids
        for step in self.generate(prompt, max_new_tokens, params, stops, logprobs, state):
            yield Step(step.token, step.logprob, dec.push(step.token))
        tail = dec.flush()
        if tail:
            yield Step(-1, None, tail)
