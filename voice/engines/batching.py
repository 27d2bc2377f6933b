"""Cross-session batching for the cascade (on by default on CUDA): one ASR queue, one LLM decode loop.

    asr = ASRBatcher(whisper, max_batch=16, wait_s=0.005)
    text = await asyncio.wrap_future(asr.submit(audio_16k))          # any thread, any session
    llm = LLMBatcher(local_chat_llm, max_rows=32)
    reply = llm.submit(messages, ReplyOptions(48, 0.0, 0.9), state=chat_state, emit=put)
    reply.cancel()                                    # barge-in: the row leaves before the next step

``ASRBatcher``: a worker thread takes the clips that wait (up to ``max_batch``, waiting at most
``wait_s`` after the first for more) and runs one ``transcribe_batch`` (``WhisperASR``: one encoder
pass over the batch, batched greedy decoding); each request's future gets its text. If the batch
fails, every clip is retried alone, so a bad request fails alone.

``LLMBatcher``: a worker thread drives ``model.text_batch.BatchedTextGenerator``: each reply is a
row of one decode loop, joining (after its prefill, which reuses the session's kept cache) and
leaving (stop, limit, cancel) at any step. ``emit`` gets the reply's text pieces (str), then
``None``; on a failure the error, then ``None`` (the cascade's piece queue protocol). A request
that fails (bad messages, too long, a consumer that raises) ends alone; a failed forward ends the
rows of that step, and the loop goes on with the next requests.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from model.common.errors import ParleyError

log = logging.getLogger(__name__)

_CLOSE = object()  # the worker threads' stop marker
Emit = Callable[[object], None]  # str piece | BaseException | None (end)


@dataclass
class BatcherStats:
    """What a batcher did (benchmarks): mean batch = items / batches."""

    batches: int = 0
    items: int = 0
    busy_s: float = 0.0


def transcribe_many(asr, audios: Sequence[np.ndarray]) -> list[str]:  # noqa: ANN001 - any ASR
    """One batched call when the ASR has ``transcribe_batch``, else one call per clip."""
    if hasattr(asr, "transcribe_batch"):  # all in one pass (its own default splits at 16)
        return [t.strip() for t in asr.transcribe_batch(list(audios), batch_size=max(1, len(audios)))]
    return [asr.transcribe(a).strip() for a in audios]


class ASRBatcher:
    """Transcription requests of all sessions -> batched ASR passes on one worker thread."""

    def __init__(self, asr, max_batch: int = 16, wait_s: float = 0.005) -> None:  # noqa: ANN001
        self.asr, self.max_batch, self.wait_s = asr, max_batch, wait_s
        self.stats = BatcherStats()
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="parley-asr-batch", daemon=True)
        self._thread.start()

    def submit(self, audio_16k: np.ndarray) -> Future:
        """-> a future of the transcript (stripped)."""
        fut: Future = Future()
        self._q.put((audio_16k, fut))
        return fut

    def close(self) -> None:
        self._q.put(_CLOSE)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._q.get()
            if first is _CLOSE:
                break
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _CLOSE:
                    closing = True
                    break
                batch.append(item)
            self._serve([(a, f) for a, f in batch if f.set_running_or_notify_cancel()])
        while True:  # requests left behind at close
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not _CLOSE and item[1].set_running_or_notify_cancel():
                item[1].set_exception(ParleyError("the ASR batcher is closed"))

    def _serve(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        try:
            texts = transcribe_many(self.asr, [a for a, _ in batch])
            for (_, f), t in zip(batch, texts):
                f.set_result(t)
        except Exception:  # noqa: BLE001 - one bad clip: retry each alone, so only it fails
            for a, f in batch:
                try:
                    f.set_result(transcribe_many(self.asr, [a])[0])
                except Exception as err:  # noqa: BLE001
                    f.set_exception(err)
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.busy_s += time.perf_counter() - t0


@dataclass(frozen=True)
class ReplyOptions:
    """Decoding settings of one reply (the cascade's config)."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int | None = None


class Reply:
    """A submitted reply: ``cancel()`` it (barge-in); ``done`` is set once it ended."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.done = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class _PieceSink:
    """``model.text_batch.RowSink`` -> the cascade's piece protocol (str..., [error], None)."""

    def __init__(self, emit: Emit, reply: Reply) -> None:
        self.emit, self.reply = emit, reply

    def on_step(self, step) -> None:  # noqa: ANN001 - model.text_generator.Step
        if step.text:
            self.emit(step.text)

    def on_end(self, error: BaseException | None) -> None:
        if self.reply.done.is_set():
            return  # exactly once
        self.reply.done.set()
        try:
            if error is not None:
                self.emit(error)
        finally:
            self.emit(None)

    def cancelled(self) -> bool:
        return self.reply.cancelled


@dataclass
class _Job:
    messages: list[dict]
    opts: ReplyOptions
    state: object | None  # model.text_generator.ChatState
    sink: _PieceSink


class LLMBatcher:
    """Chat replies of all sessions as rows of one continuous-batching decode loop (a LocalChatLLM)."""

    def __init__(self, llm, max_rows: int = 32) -> None:  # noqa: ANN001 - model.components.llm.LocalChatLLM
        from model.text_batch import BatchedTextGenerator  # noqa: PLC0415

        self.llm = llm
        self.gen = BatchedTextGenerator(llm.engine, max_rows=max_rows)
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="parley-llm-batch", daemon=True)
        self._thread.start()

    def submit(self, messages: list[dict], opts: ReplyOptions, emit: Emit, state: object | None = None) -> Reply:
        """Queue a reply; its pieces go to ``emit`` from the worker thread (see the module docstring)."""
        reply = Reply()
        self._q.put(_Job(messages, opts, state, _PieceSink(emit, reply)))
        return reply

    def close(self) -> None:
        self._q.put(_CLOSE)
        self._thread.join(timeout=10)

    def _request(self, job: _Job):  # noqa: ANN202 - model.text_batch.RowRequest
        from model.sampling import SamplingParams  # noqa: PLC0415
        from model.text_batch import RowRequest  # noqa: PLC0415

        o = job.opts
        params = SamplingParams(temperature=o.temperature, top_p=o.top_p, seed=o.seed,
                                repetition_penalty=self.llm.repetition_penalty)
        return RowRequest(self.llm._prompt(job.messages, o.max_new_tokens), o.max_new_tokens, params,
                          job.sink, job.state)

    def _run(self) -> None:
        pending: deque[_Job] = deque()
        while True:
            idle = not self.gen.n_active and not pending
            items = [self._q.get()] if idle else []
            while True:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if any(i is _CLOSE for i in items):
                err = ParleyError("the LLM batcher is closed")
                for job in [*pending, *(i for i in items if i is not _CLOSE)]:
                    job.sink.on_end(err)
                self.gen.abort(err)
                self.gen.close()
                return
            pending.extend(items)
            joiners = []
            while pending and len(joiners) < self.gen.free:
                job = pending.popleft()
                if job.sink.cancelled():
                    job.sink.on_end(None)
                    continue
                try:
                    joiners.append(self._request(job))
                except Exception as err:  # noqa: BLE001 - bad messages, too long: this reply only
                    job.sink.on_end(err)
            try:
                if joiners:
                    self.gen.join(joiners)
                if self.gen.n_active:
                    self.gen.step()
            except Exception as err:  # noqa: BLE001 - a failed forward: end these rows, keep serving
                log.exception("batched LLM step failed")
                for r in joiners:
                    r.sink.on_end(err)  # no-op for rows that already ended
                self.gen.abort(err)
