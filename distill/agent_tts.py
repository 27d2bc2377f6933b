"""Agent speech (piper joe, noise 0) in torch on a device, batched across traces (`--tts-device`).

    tts = BatchedAgentTTS("cuda", max_batch=64)
    fut = tts.submit(reply_text)        # -> Future of ((audio, sr, words, how), ms), as TTSStages.agent_tts
    tts.speak(texts)                    # the same, many texts in one call, here
    tts.close()

The default path (distill/batched.py) runs `TTSStages.agent_tts` on CPU processes, one sentence per
onnxruntime call. Here one driver-side thread takes every reply queued so far (waiting ``linger_s``
for the rest of an LLM batch's replies) and says all their sentences through
`model.components.piper_batch.TorchPiper` (``max_batch`` sentences per `infer` call, sorted by
length). Word timings come from the durations exactly as on the ONNX path: piper's
`phoneme_alignments` -> `distill.voices.aligned_audio` -> `word_timings`. The audio equals the ONNX
path's to ~1e-4 on a CPU (tests/test_distill_agent_tts.py); on a GPU (TF32 convolutions) less
closely, and a phoneme's duration can round to the next 256-sample frame.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from queue import Empty, SimpleQueue

import numpy as np

from distill.voices import aligned_audio, word_timings

LINGER_S = 0.02  # after the first queued reply, wait this long for more (the rest of an LLM batch)


class BatchedAgentTTS:
    """piper joe on a torch ``device``: `speak` (many texts, here) and `submit` (one text, a Future
    served by a background thread that batches whatever is queued)."""

    def __init__(self, device: str = "cuda", max_batch: int = 64, linger_s: float = LINGER_S) -> None:
        import torch

        from model.components.piper_batch import TorchPiper
        from model.components.tts import joe_paths

        self.tts = TorchPiper.load(*joe_paths(), device=device, dtype=torch.float32, max_batch=max_batch)
        self.sample_rate = self.tts.sample_rate
        self.device, self.linger_s = device, linger_s
        self._q: SimpleQueue[tuple[str, Future] | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def speak(self, texts: list[str]) -> list[tuple[np.ndarray, int, list[list], str]]:
        """Texts -> (audio float32, sample rate, word timings, timing source) each, one batched run."""
        from piper import SynthesisConfig

        syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0)  # DeterministicPiper's
        out = []
        for text, chunks in zip(texts, self.tts.synthesize_batch(texts, syn)):
            x, spans = aligned_audio(chunks, self.sample_rate)
            words, how = word_timings(text, spans, len(x) / self.sample_rate)
            out.append((x, self.sample_rate, words, how))
        return out

    def speak_timed(self, texts: list[str]) -> tuple[list[tuple], list[float]]:
        """`speak`, with each text's share of the wall time (ms), as the executors report stages."""
        if not texts:
            return [], []
        t0 = time.perf_counter()
        out = self.speak(texts)
        ms = round((time.perf_counter() - t0) * 1000 / len(texts), 1)
        return out, [ms] * len(texts)

    def submit(self, text: str) -> Future:
        """-> Future of ((audio, sr, words, how), ms): said with the other replies queued meanwhile."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="agent-tts", daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._q.put((text, fut))
        return fut

    def _serve(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.perf_counter() + self.linger_s
            while True:
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.perf_counter()))
                except Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            try:
                res, ms = self.speak_timed([t for t, _ in live])
                for (_, f), r, m in zip(live, res, ms):
                    f.set_result((r, m))
            except Exception as e:  # every trace of this batch fails; a rerun retries them
                for _, f in live:
                    f.set_exception(e)
            if stop:
                return

    def close(self, cancel: bool = False) -> None:
        """Stop the thread after the queued replies (``cancel``: drop them)."""
        if self._thread is None:
            return
        if cancel:
            while True:
                try:
                    item = self._q.get_nowait()
                except Empty:
                    break
                if item is not None:
                    item[1].cancel()
        self._q.put(None)
        self._thread.join()
        self._thread = None


def choose_tts_device(bench: dict, workers: int, device: str = "cuda", margin: float = 2.0,
                      max_mismatch: int = 2, max_moved_ms: float = 50.0) -> tuple[str, str]:
    """From `parley bench tts --json` rows: (``device`` or "" for the CPU processes, why).

    The torch path wins when its best batch makes ``margin`` x the audio of ``workers`` onnxruntime
    processes (one-by-one rate x workers) and its sentence lengths stay near onnxruntime's: no length
    moved more than ``max_moved_ms`` (a phoneme duration rounding the other way on the GPU: the torch
    path's word timings come from its own durations, so its audio stays aligned), or, for rows
    without that field, no more than ``max_mismatch`` lengths moved. Run 2's H200 moved 9-10 of 64."""
    rows = bench.get("rows") or []
    if len(rows) < 2:
        return "", "(no torch rows in the bench)"
    procs = rows[0]["audio_per_s"] * workers
    best = max(r["audio_per_s"] for r in rows[1:])
    worst = max(int(r.get("length_mismatches", 0)) for r in rows[1:])
    moved = [float(r["max_len_diff_ms"]) for r in rows[1:] if "max_len_diff_ms" in r]
    near = max(moved) <= max_moved_ms if len(moved) == len(rows) - 1 else worst <= max_mismatch
    why = (f"(torch {best:.0f} audio s/s vs {workers} processes ~{procs:.0f}; length mismatches <= {worst}"
           + (f", moved <= {max(moved):.0f} ms)" if moved else ")"))
    return (device if best > margin * procs and near else ""), why
