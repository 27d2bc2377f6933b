"""Continuous batching of text generation: the replies of many conversations in one decode loop.

    gen = BatchedTextGenerator(text_generator, max_rows=32)
    gen.join([RowRequest(prompt_ids, 48, params, sink, state), ...])  # one batched prefill, first tokens
    while gen.n_active:
        gen.step()                        # one forward for every active row; tokens go to each sink
    gen.close()                           # the sampling threads

Rows join at any step (the joiners' prompts are prefilled together, right-padded) and leave at
any step (stop id, token limit, ``sink.cancelled()``; ``drop_cancelled`` frees those places
before a join). Each row keeps its own sampling RNG,
repetition history, incremental detokenizer and stop rule, so it yields the tokens that
``TextGenerator.stream`` yields alone (equal on CPU fp32 in the tests; batched matmuls in
fp16/bf16 may round differently, as any batching does).

Cache layout: one batch ``KVCache`` (n_layers, R, n_kv, T, hd). Active rows are 0..n-1 (a leaving
row's place is taken by the last row: one row copy) and a step runs on the view of those n rows
(``KVCache.narrow``), attending up to the longest row's position (the rest masked). A padded
prefill column of a row is written at the row's next position, which its first decoded token
overwrites before any query can see it.

Kept conversation caches (``ChatState``, issue 13) stay per conversation: on join the common prefix
of the state's cache and the new prompt is copied into the row and only the rest is prefilled; on
leave the row's positions are copied back. So the first token does not grow with the history,
and a turn after a batched reply reuses it as after a one-by-one reply. Cost: two copies of the
conversation's keys/values per reply (~23 KB per token for SmolLM2 in 16 bit; microseconds on a GPU).
Sampling: greedy rows are picked on the device (``greedy_rows``); from ``SAMPLE_THREADS_FROM``
sampled rows on, rows are sampled on host threads (NumPy releases the GIL in the heavy parts; each
row draws from its own RNG, so the tokens do not depend on the threads).
Not thread-safe: one thread drives it (``voice/engines/batching.py``, ``distill/llm_batch.py``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model.llama import KVCache
from model.sampling import SamplingParams, log_softmax, sample_next
from model.text_generator import CACHE_ROUND, PREFILL_CHUNK, ChatState, Step, TextGenerator
from model.tokenizer import IncrementalDecoder

SAMPLE_THREADS_FROM = 16  # sampled rows per step from which they are sampled on threads


class RowSink(Protocol):
    """Where a row's output goes (called on the generator's thread)."""

    def on_step(self, step: Step) -> None:
        """A generated token (``text`` filled when the generator has a tokenizer); a last
        text-only Step (token -1) carries the detokenizer's tail at a natural end."""

    def on_end(self, error: BaseException | None) -> None:
        """The row left (stop, limit, cancel: None; a failure: the error). Called exactly once."""

    def cancelled(self) -> bool:
        """True: drop the row before the next step (barge-in)."""


@dataclass
class RowRequest:
    prompt: list[int]  # token ids (chat template applied)
    max_new_tokens: int
    params: SamplingParams
    sink: RowSink
    state: ChatState | None = None  # the conversation's kept cache (copied in, copied back)
    stop_ids: frozenset[int] | None = None  # None: the tokenizer's stop ids (none without one)
    logprobs: bool = False


@dataclass
class _Row:
    """One active reply: its streaming state. Its cache row is its index in ``rows``."""

    req: RowRequest
    rng: np.random.Generator
    history: list[int]  # prompt + generated tokens fed to the model (= cache positions 0..len-1)
    limit: int  # new tokens at most
    stops: frozenset[int]
    dec: IncrementalDecoder | None
    reused: int  # prompt tokens copied from the state's cache
    n_new: int = 0  # tokens yielded so far
    next_tok: int = -1  # yielded, not yet fed (fed at position len(history) by the next step)


@dataclass
class BatchStats:
    """Counters for benchmarks: mean batch = row_steps / steps."""

    steps: int = 0
    row_steps: int = 0
    prefills: int = 0
    prefill_rows: int = 0
    step_s: float = 0.0
    prefill_s: float = 0.0
    copy_s: float = 0.0  # kept caches in and out, row moves
    rows_peak: int = 0


class BatchedTextGenerator:
    """Continuous batching on one ``TextGenerator``'s weights (its decoder, prefill model, tokenizer)."""

    def __init__(self, gen: TextGenerator, max_rows: int = 32, threads: int = 0) -> None:
        """``threads``: host threads that sample rows (0: min(8, cores)); started on first use."""
        self.gen, self.max_rows = gen, max_rows
        self.threads = threads or min(8, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self.model, self.pm = gen.model, gen.prefill_model or gen.model
        self.cache: KVCache | None = None  # (n_layers, R, n_kv, T, hd), grown on demand
        self.rows: list[_Row] = []
        self.stats = BatchStats()

    @property
    def n_active(self) -> int:
        return len(self.rows)

    @property
    def free(self) -> int:
        return self.max_rows - len(self.rows)

    # --- join: validate, copy kept caches in, one batched prefill, first tokens ----------------
    @torch.inference_mode()
    def join(self, reqs: list[RowRequest]) -> None:
        """Admit requests (at most ``free``); a bad request ends at once with its error."""
        if len(reqs) > self.free:
            raise RuntimeError(f"{len(reqs)} rows asked, {self.free} free")
        max_len = self.model.cfg.max_seq_len
        new: list[_Row] = []
        for r in reqs:
            if not r.prompt or len(r.prompt) >= max_len:
                _end(r.sink, ValueError(f"prompt of {len(r.prompt)} tokens does not fit the context ({max_len})"))
                continue
            for i in reversed(range(len(self.rows))):  # a new turn of a conversation still decoding
                if r.state is not None and self.rows[i].req.state is r.state:
                    self._leave(i, None)
            tok = self.gen.tokenizer
            stops = r.stop_ids if r.stop_ids is not None else (tok.stop_ids if tok else frozenset())
            dec = tok.incremental_decoder(skip_special=True) if tok else None
            limit = min(r.max_new_tokens, max_len - len(r.prompt))
            if limit <= 0:
                _end(r.sink, None)
                continue
            new.append(_Row(r, np.random.default_rng(r.params.seed), list(r.prompt), limit, frozenset(stops),
                            dec, r.state.reusable(r.prompt) if r.state is not None else 0))
        if not new:
            return
        n0 = len(self.rows)
        self._ensure(n0 + len(new), max(len(w.history) + w.limit for w in new))
        t0 = time.perf_counter()
        for j, w in enumerate(new):  # the kept prefix of each conversation into its row
            self.cache.reset_rows([n0 + j])
            if w.reused:
                src = w.req.state.cache
                self._copy_row(src, 0, self.cache, n0 + j, w.reused)
                w.req.state.reused = w.reused
            elif w.req.state is not None:
                w.req.state.reused = 0
        self.stats.copy_s += time.perf_counter() - t0
        logits = self._prefill(new, n0)  # (j, V)
        self.rows += new
        self.stats.rows_peak = max(self.stats.rows_peak, len(self.rows))
        self._advance(list(range(n0, n0 + len(new))), logits)

    def _prefill(self, new: list[_Row], n0: int) -> torch.Tensor:
        """Right-padded prefill of the prompts' new tokens -> logits of each last prompt token (j, V)."""
        t0 = time.perf_counter()
        dev = self.gen.device
        todo = [w.history[w.reused:] for w in new]  # tokens to run per row (>= 1: reuse <= len - 1)
        width = max(map(len, todo))
        view = self.cache.narrow(n0, len(new))
        last: list[torch.Tensor | None] = [None] * len(new)
        for c in range(0, width, PREFILL_CHUNK):
            t = min(PREFILL_CHUNK, width - c)
            ids = torch.zeros((len(new), t), dtype=torch.long)  # (j, t), padded with id 0
            pos = torch.zeros((len(new), t), dtype=torch.long)  # (j, t)
            for j, (w, x) in enumerate(zip(new, todo)):
                real = x[c:c + t]
                ids[j, :len(real)] = torch.tensor(real, dtype=torch.long)
                pos[j] = torch.arange(w.reused + c, w.reused + c + t)
                pos[j, len(real):] = len(w.history)  # padding -> the slot the first new token overwrites
            h = self.pm(ids.to(dev), positions=pos.to(dev), cache=view, return_hidden=True)  # (j, t, d)
            for j, x in enumerate(todo):
                if c <= len(x) - 1 < c + t:
                    last[j] = h[j, len(x) - 1 - c]  # (d,)
        logits = self.pm.output(torch.stack(last)[:, None])[:, 0]  # (j, V)
        self.stats.prefills += 1
        self.stats.prefill_rows += len(new)
        self.stats.prefill_s += time.perf_counter() - t0
        return logits

    # --- step: one forward for all rows ---------------------------------------------------------
    @torch.inference_mode()
    def drop_cancelled(self) -> None:
        """Let the rows whose sink is cancelled leave now (no tail: not a natural end)."""
        for i in reversed(range(len(self.rows))):
            if _cancelled(self.rows[i].req.sink):
                self._leave(i, None, natural=False)

    @torch.inference_mode()
    def step(self) -> None:
        """Drop cancelled rows, feed every row its last token (one forward), sample the next."""
        self.drop_cancelled()
        if not self.rows:
            return
        t0 = time.perf_counter()
        dev = self.gen.device
        toks = torch.tensor([[w.next_tok] for w in self.rows], dtype=torch.long, device=dev)  # (n, 1)
        pos = torch.tensor([len(w.history) for w in self.rows], dtype=torch.long, device=dev)  # (n,)
        logits = self.model(toks, positions=pos, cache=self.cache.narrow(0, len(self.rows)))  # (n, 1, V)
        for w in self.rows:
            w.history.append(w.next_tok)
        self.stats.steps += 1
        self.stats.row_steps += len(self.rows)
        self.stats.step_s += time.perf_counter() - t0
        self._advance(list(range(len(self.rows))), logits[:, -1])

    def _sample(self, idx: list[int], logits: torch.Tensor) -> tuple[list[int], list[float | None]]:
        """Next token of rows ``idx`` from ``logits`` (len(idx), V) -> (tokens, log-probs or None).

        Greedy rows without log-probabilities are decided on the device in one batched argmax
        (``greedy_rows``: the same token as ``sample_next``); only the other rows' logits come to
        the host (64 rows x 49k floats per step would cost milliseconds of copying and NumPy),
        sampled on threads from ``SAMPLE_THREADS_FROM`` rows on."""
        rows = [self.rows[i] for i in idx]
        fast = [j for j, w in enumerate(rows) if w.req.params.temperature == 0 and not w.req.logprobs]
        toks: list[int] = [0] * len(idx)
        lps: list[float | None] = [None] * len(idx)
        if fast:
            recent = [rows[j].history[-rows[j].req.params.repetition_window:] for j in fast]
            pen = [rows[j].req.params.repetition_penalty for j in fast]
            for j, t in zip(fast, greedy_rows(logits[fast], recent, pen).tolist()):
                toks[j] = t
        slow = sorted(set(range(len(idx))) - set(fast))
        if slow:
            host = logits[slow].float().cpu().numpy()  # (len(slow), V)

            def draw(k: int) -> tuple[int, float | None]:  # touches row slow[k] only: thread-safe
                w, row = rows[slow[k]], host[k]
                p = w.req.params
                tok = sample_next(row, p, w.history[-p.repetition_window:], w.rng)
                return tok, (float(log_softmax(row)[tok]) if w.req.logprobs else None)

            ks = range(len(slow))
            threaded = len(slow) >= SAMPLE_THREADS_FROM and self.threads > 1
            for j, (t, lp) in zip(slow, self._threads().map(draw, ks) if threaded else map(draw, ks)):
                toks[j], lps[j] = t, lp
        return toks, lps

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="parley-sample")
        return self._pool

    def close(self) -> None:
        """Stop the sampling threads (a later step starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _advance(self, idx: list[int], logits: torch.Tensor) -> None:
        """Sample the next token of rows ``idx`` from ``logits`` (len(idx), V); emit; end rows."""
        ended: list[tuple[int, BaseException | None]] = []
        toks, lps = self._sample(idx, logits)
        for i, tok, lp in zip(idx, toks, lps):
            w = self.rows[i]
            if tok in w.stops:
                ended.append((i, None))
                continue
            try:
                w.req.sink.on_step(Step(tok, lp, w.dec.push(tok) if w.dec else ""))
            except Exception as err:  # noqa: BLE001 - a broken consumer ends its row only
                ended.append((i, err))
                continue
            w.n_new += 1
            w.next_tok = tok
            if w.n_new == w.limit:
                ended.append((i, None))  # the last token is not fed (as TextGenerator)
        for i, err in sorted(ended, reverse=True):  # highest first: a row moved down is never one to end
            self._leave(i, err)

    # --- leave: copy the kept cache back, fill the hole with the last row -------------------------
    def _leave(self, i: int, error: BaseException | None, natural: bool = True) -> None:
        t0 = time.perf_counter()
        w = self.rows[i]
        st = w.req.state
        if st is not None and error is None:
            n = len(w.history)  # positions 0..n-1 hold the conversation (prompt + fed tokens)
            if st.cache is None or st.cache.max_len < n:
                size = min(self.model.cfg.max_seq_len, -(-(len(w.req.prompt) + w.limit) // CACHE_ROUND) * CACHE_ROUND)
                old_len = st.cache.max_len if st.cache is not None else 0
                st.cache = self.model.new_cache(1, max(size, min(self.model.cfg.max_seq_len, 2 * old_len)))
                start = 0
            else:
                start = w.reused  # the state's cache already holds the reused prefix
            st.cache.truncate(start)
            self._copy_row(self.cache, i, st.cache, 0, n, start)
            st.tokens = list(w.history)
        last = len(self.rows) - 1
        if i != last:
            m = len(self.rows[last].history)  # its positions (the slot its next token writes needs none)
            self.cache.reset_rows([i])
            self._copy_row(self.cache, last, self.cache, i, m)
            self.rows[i] = self.rows[last]
        self.rows.pop()
        self.stats.copy_s += time.perf_counter() - t0
        if natural and error is None and w.dec is not None:
            tail = w.dec.flush()
            if tail:
                try:
                    w.req.sink.on_step(Step(-1, None, tail))
                except Exception as err:  # noqa: BLE001
                    error = err
        _end(w.req.sink, error)

    def abort(self, error: BaseException) -> None:
        """End every row with ``error`` (a failed forward); kept caches are left as they were."""
        rows, self.rows = self.rows, []
        for w in rows:
            _end(w.req.sink, error)
        self.cache = None  # its contents are undefined after a failure

    # --- cache housekeeping ------------------------------------------------------------------
    def _ensure(self, rows: int, length: int) -> None:
        """The batch cache holds >= ``rows`` rows of >= ``length`` positions (grown with a copy)."""
        c, cap = self.cache, self.model.cfg.max_seq_len
        if c is not None and c.batch_size >= rows and c.max_len >= length:
            return
        old_rows, old_len = (c.batch_size, c.max_len) if c is not None else (0, 0)
        R = min(self.max_rows, max(rows, 2 * old_rows))
        T = min(cap, max(-(-length // CACHE_ROUND) * CACHE_ROUND, old_len if length <= old_len else 2 * old_len))
        new = self.model.new_cache(R, max(T, length))
        if c is not None and self.rows:
            n = len(self.rows)
            new.k[:, :n, :, :old_len].copy_(c.k[:, :n])
            new.v[:, :n, :, :old_len].copy_(c.v[:, :n])
            new.slot_pos[:n, :old_len].copy_(c.slot_pos[:n])
        self.cache = new

    @staticmethod
    def _copy_row(src: KVCache, i: int, dst: KVCache, j: int, n: int, start: int = 0) -> None:
        """Positions [start, n) of row i of ``src`` -> row j of ``dst`` (keys, values, slot marks)."""
        dst.k[:, j, :, start:n].copy_(src.k[:, i, :, start:n])
        dst.v[:, j, :, start:n].copy_(src.v[:, i, :, start:n])
        dst.slot_pos[j, start:n].copy_(src.slot_pos[i, start:n])


def greedy_rows(logits: torch.Tensor, recent: list[list[int]], penalty: list[float]) -> torch.Tensor:
    """logits (n, V) -> (n,) argmax after each row's repetition penalty on its ``recent`` ids: the
    token ``sample_next`` picks at temperature 0 (same float32 ops; the first index on ties)."""
    x = logits.float().clone()  # (n, V)
    rows = [j for j, (r, p) in enumerate(zip(recent, penalty)) if r and p != 1.0]
    if rows:
        width = max(len(recent[j]) for j in rows)
        ids = torch.tensor([recent[j] + recent[j][:1] * (width - len(recent[j])) for j in rows],
                           dtype=torch.long, device=x.device)  # (m, W), padded with a repeat (no effect)
        pen = torch.tensor([penalty[j] for j in rows], dtype=torch.float32, device=x.device)[:, None]  # (m, 1)
        sub = x[rows]  # (m, V)
        sel = sub.gather(1, ids)
        sub.scatter_(1, ids, torch.where(sel > 0, sel / pen, sel * pen))
        x[rows] = sub
    return x.argmax(-1)


def _cancelled(sink: RowSink) -> bool:
    try:
        return bool(sink.cancelled())
    except Exception:  # noqa: BLE001 - a broken consumer is a cancelled one
        return True


def _end(sink: RowSink, error: BaseException | None) -> None:
    """sink.on_end, never raising (one consumer must not break the loop)."""
    try:
        sink.on_end(error)
    except Exception:  # noqa: BLE001
        pass
