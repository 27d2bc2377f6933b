"""Streaming trace scheduler of the batched path: every stage is fed as soon as its input exists.

    for index, result in stream_traces(plans, ex, window=512, llm_batch=128):
        ...  # a TraceResult, or the exception that failed this trace; in order of completion

One driver thread keeps up to ``window`` traces in flight (``pipeline.TraceBuilder``). User speech
and agent speech go to the executor's TTS processes one turn at a time (futures), Whisper and
the LLM run batched in this thread over whatever is waiting for them. So the LLM decodes the
replies of some traces while the TTS processes speak the replies of others, a trace's next
dialogue turn joins the next LLM batch as soon as its previous reply is spoken, and no stage
waits for the slowest item of a block:

    block by block (before)            streaming (this module)
    LLM  ████░░░░░░░██░░░░██░░░        LLM  ███░░░░█░░░░█░░░░█░░░░█░ ...
    TTS  ░░░░██████▒░░███▒░░██▒        TTS  ░░░████████████████████████ ...
         (pool idle while the LLM runs, ▒ = waiting for the last item of a round)

When to run the LLM (``llm_due``): when ``llm_batch`` requests wait; when a TTS process is (about
to be) idle; when the queued agent turns would not last one LLM batch (fewer than
``workers * (1 + llm_s / tts_s)``, running means of both) and a quarter batch waits; or when
nothing else is pending.

Records do not depend on this order: each trace takes its steps in its own fixed order
(``TraceBuilder``), every random draw comes from its plan, and the LLM samples each row with its
own seed. Which rows share an LLM batch does vary with timing, and batched matmuls may round
differently per batch: with the real models on CPU (float32), 142 replies of this path and of
the block-by-block one had the same tokens, texts and audio, log-probs within 1e-4 (their 4th
decimal), as between the batched and the one-by-one path (distill/README.md).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from queue import Empty, SimpleQueue
from typing import Protocol

import numpy as np

from distill.pipeline import TraceBuilder, TraceResult
from distill.plan import PlannedTurn, TracePlan
from model.common.errors import ParleyError

USER, AGENT = "user", "agent"  # the kinds of TTS futures
_EWMA = 0.2  # weight of a new sample in the running means of LLM batch and TTS job seconds


class StreamExecutor(Protocol):
    """The stages as the scheduler uses them (``distill.batched.BatchedExecutor``)."""

    models: dict[str, str]
    workers: int  # TTS processes (1 when the TTS runs in the driver)

    def submit_user(self, job: tuple[str, PlannedTurn]) -> Future: ...  # -> ((clean, aug, pauses), ms)

    def submit_agent(self, text: str) -> Future: ...  # -> ((audio, sr, words, how), ms)

    def hear(self, clips: list[tuple[np.ndarray, str]]) -> tuple[list[str], list[float]]: ...  # (aug, planned)

    def llm(self, reqs: list[tuple[list[dict], int]]) -> tuple[list[tuple[str, dict | None]], list[float]]: ...


class _Flow:
    def __init__(self, ex: StreamExecutor, window: int, llm_batch: int, asr_batch: int) -> None:
        self.ex, self.window = ex, max(1, window)
        self.llm_batch, self.asr_batch = max(1, llm_batch), max(1, asr_batch)
        self.futs: dict[Future, tuple[str, TraceBuilder, int]] = {}
        self.ready: SimpleQueue[Future] = SimpleQueue()  # finished futures (done callbacks, any thread)
        self.n_user = self.n_agent = 0  # pending futures of each kind
        self.unheard: dict[int, int] = {}  # trace index -> user clips not yet through ASR
        self.asr_q: list[tuple[TraceBuilder, int]] = []
        self.llm_q: deque[tuple[TraceBuilder, tuple[list[dict], int]]] = deque()
        self.failed: set[int] = set()  # trace indices that failed while in flight
        self.out: list[tuple[int, TraceResult | Exception]] = []
        self.inflight = self.finished = 0
        self.more = True  # plans left to admit
        self.t0 = time.perf_counter()
        self.llm_s = 0.0  # running mean of one LLM batch's wall seconds
        self.tts_s = 1.0  # running mean of one agent TTS job's seconds

    # --- bookkeeping ---------------------------------------------------------------------------
    def _fail(self, b: TraceBuilder, e: Exception) -> None:
        if b.plan.index not in self.failed:
            self.failed.add(b.plan.index)
            self.unheard.pop(b.plan.index, None)
            self.inflight -= 1
            self.out.append((b.plan.index, e))

    def _advance(self, b: TraceBuilder) -> None:
        """Take the trace through its next steps until one waits for a stage (or it is done)."""
        while not b.done:
            req = b.start_turn()
            if req is not None:
                self.llm_q.append((b, req))
                return
            b.finish_turn()  # no reply this turn (silence, backchannel)
        self.inflight -= 1
        self.finished += 1
        total_ms = 1000 * (time.perf_counter() - self.t0) / self.finished  # the run's wall time per trace
        self.out.append((b.plan.index, b.result(self.ex.models, total_ms)))

    def _submit(self, kind: str, b: TraceBuilder, j: int, arg) -> None:
        try:
            fut = self.ex.submit_user(arg) if kind == USER else self.ex.submit_agent(arg)
        except BrokenProcessPool:
            raise ParleyError("a TTS process died (out of memory?); the traces written so far are safe: "
                              "rerun the same command to resume") from None
        self.futs[fut] = (kind, b, j)
        fut.add_done_callback(self.ready.put)
        if kind == USER:
            self.n_user += 1
        else:
            self.n_agent += 1

    # --- the stages ----------------------------------------------------------------------------
    def admit(self, plans: Iterator[TracePlan]) -> None:
        while self.more and self.inflight < self.window:
            plan = next(plans, None)
            if plan is None:
                self.more = False
                return
            b = TraceBuilder(plan)
            self.inflight += 1
            self.unheard[plan.index] = len(plan.turns)
            for j, job in enumerate(b.user_jobs()):
                self._submit(USER, b, j, job)

    def harvest(self, block: bool) -> None:
        """Take in the finished TTS futures (``block``: wait for at least one)."""
        done = [self.ready.get()] if block and self.futs else []
        while True:
            try:
                done.append(self.ready.get_nowait())
            except Empty:
                break
        for fut in done:
            kind, b, j = self.futs.pop(fut)
            if kind == USER:
                self.n_user -= 1
            else:
                self.n_agent -= 1
            if b.plan.index in self.failed:
                continue
            try:
                res, ms = fut.result()
            except BrokenProcessPool:
                raise ParleyError("a TTS process died (out of memory?); the traces written so far are safe: "
                                  "rerun the same command to resume") from None
            except Exception as e:  # this trace fails; a rerun retries it
                self._fail(b, e)
                continue
            if kind == USER:
                b.set_user(j, res, ms)
                self.asr_q.append((b, j))
            else:
                self.tts_s += _EWMA * (ms / 1000 - self.tts_s)
                b.finish_turn(res, ms)
                self._advance(b)

    def run_asr(self) -> None:
        batch, self.asr_q = [(b, j) for b, j in self.asr_q if b.plan.index not in self.failed], []
        if not batch:
            return
        try:
            heard, ms = self.ex.hear([b.asr_input(j) for b, j in batch])
        except Exception as e:
            for b, _ in batch:
                self._fail(b, e)
            return
        for (b, j), text, m in zip(batch, heard, ms):
            b.set_heard(j, text, m)
            self.unheard[b.plan.index] -= 1
            if self.unheard[b.plan.index] == 0:
                del self.unheard[b.plan.index]
                self._advance(b)  # every turn heard: the first turn starts

    def run_llm(self) -> None:
        batch = [self.llm_q.popleft() for _ in range(min(self.llm_batch, len(self.llm_q)))]
        batch = [(b, r) for b, r in batch if b.plan.index not in self.failed]
        if not batch:
            return
        t0 = time.perf_counter()
        try:
            replies, ms = self.ex.llm([r for _, r in batch])
        except Exception as e:
            for b, _ in batch:
                self._fail(b, e)
            return
        dt = time.perf_counter() - t0
        self.llm_s = dt if not self.llm_s else self.llm_s + _EWMA * (dt - self.llm_s)
        for (b, _), (raw, teacher), m in zip(batch, replies, ms):
            text = b.set_reply(raw, teacher, m)
            if text:
                self._submit(AGENT, b, b.turn, text)
            else:
                b.finish_turn()
                self._advance(b)

    # --- policy --------------------------------------------------------------------------------
    def asr_due(self) -> bool:
        return len(self.asr_q) >= self.asr_batch or self.n_user == 0

    def llm_due(self) -> bool:
        """A full batch waits; or a TTS process is (about to be) idle; or the queued agent turns
        would not last one LLM batch and a quarter batch waits (smaller batches cost more per row)."""
        q, w = len(self.llm_q), self.ex.workers
        if q >= self.llm_batch or self.n_agent < w:
            return True
        low_water = w * (1 + self.llm_s / max(self.tts_s, 1e-3))
        return self.n_agent < low_water and q >= max(1, min(self.llm_batch, self.window) // 4)

    def step(self, plans: Iterator[TracePlan]) -> bool:
        """One scheduling step; False when everything is done."""
        self.admit(plans)
        self.harvest(block=False)
        if self.asr_q and self.asr_due():
            self.run_asr()
        elif self.llm_q and self.llm_due():
            self.run_llm()
        elif self.futs:
            self.harvest(block=True)
        elif self.asr_q:
            self.run_asr()
        elif self.llm_q:
            self.run_llm()
        else:
            assert self.inflight == 0, f"{self.inflight} trace(s) in flight with nothing pending"
            return self.more
        return True

    def cancel(self) -> None:
        for fut in self.futs:
            fut.cancel()


def stream_traces(plans: Iterable[TracePlan], ex: StreamExecutor, window: int = 256, llm_batch: int = 128,
                  asr_batch: int = 32) -> Iterator[tuple[int, TraceResult | Exception]]:
    """Traces through ``ex`` with up to ``window`` in flight -> (index, result or the exception that
    failed it), as each finishes. ``plans`` is read only when a place in the window is free, so an
    iterable that stops at a time budget stops new traces from starting; in-flight ones finish.
    A ``BrokenProcessPool`` (a TTS process died) ends the run with a ParleyError."""
    flow = _Flow(ex, window, llm_batch, asr_batch)
    it = iter(plans)
    try:
        while flow.step(it) or flow.out:
            yield from flow.out
            flow.out.clear()
    finally:
        flow.cancel()
