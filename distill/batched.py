"""Data made where the compute is: the batched generation path of the GPU machine (issue 11).

    BatchedExecutor(BatchSpec(device="cuda", tts_workers=15, llm_batch=128))

- user speech (espeak-ng / flite / piper + augmentation) and agent speech (piper joe) run on
  ``tts_workers`` CPU processes (spawned, each loads the TTS voices once, one thread each);
- Whisper and the LLM run on ``device``, batched across traces (``WhisperASR.transcribe_batch``,
  ``distill.llm_batch.chat_batch``: up to ``llm_batch`` replies decoded together, continuous
  batching), one model copy in the driver process;
- ``distill.flow.stream_traces`` drives them (``generate --batched``): up to ``block`` traces in
  flight, each turn's speech submitted to the TTS processes as soon as its text exists, the LLM
  batched over the replies that wait for it while the processes speak others (``submit_user``,
  ``submit_agent``, ``hear``, ``llm``); ``distill.pipeline.generate_traces`` drives the same
  executor stage by stage over a list of traces (``user_speech``, ``asr``, ``llm``, ``agent_tts``).
- ``tts_device`` (``--tts-device cuda``): agent speech instead in torch on that device, the
  sentences of many traces' replies in one call (``distill.agent_tts.BatchedAgentTTS``, a driver
  thread); user speech stays on the processes (none are started for speak-only data);
- ``speak_only``: data of the Speak stage without Whisper, user voices, espeak-ng or flite: the
  user's clip is silence, ``asr_text`` is the planned user text, the LLM answers it and piper joe
  says the reply (the agent speech + word-timed monologue are what Speak trains on).

Every random choice still comes from the plan of (seed, index), so a trace is the same as on the
one-by-one path (the test checks it on CPU). On a GPU the batched bf16 LLM can round differently
from the CPU fp16 decoder: a trace is reproducible per (seed, index, device), and the stored
``models`` field says which path made it.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from distill.pipeline import user_speech_job
from model.common.audio_constants import SPEECH_SR
from distill.stages import StageKind, StagesSpec

_TTS = None  # the worker process's TTS stages
TTS_NICE = 10  # TTS processes yield the CPU to the driver: they use the cores it leaves idle
SPEAK_USER_S = 0.32  # speak-only traces: the user's clip is this much silence (4 codec frames)


@dataclass(frozen=True)
class BatchSpec:
    """How the batched path spreads the stages (built from `parley distill generate --batched`)."""

    stages: StagesSpec = StagesSpec()
    device: str = "cpu"  # Whisper and the LLM: "cuda" on the GPU machine
    tts_workers: int = 0  # CPU processes for the TTS stages; 0: in this process
    asr_batch: int = 32
    llm_batch: int = 128  # LLM replies decoded together (more wait and join as rows leave)
    block: int = 256  # traces in flight (stream_traces' window; LLM batches are drawn from them)
    speak_only: bool = False  # Speak data: no user voices, no Whisper (asr_text = the planned text)
    tts_device: str = ""  # agent speech (piper joe) in torch on this device, batched; "": on the TTS processes
    tts_batch: int = 64  # sentences per torch TTS call (tts_device)


def _init_tts(spec: StagesSpec, nice: int = 0) -> None:
    global _TTS
    import os

    import torch

    from distill.stages import FakeStages, TTSStages

    if nice:
        os.nice(nice)  # the driver (LLM, scheduling, writing) is the serial path: it goes first
    torch.set_num_threads(1)
    _TTS = FakeStages(spec.sleep_s) if spec.kind is StageKind.FAKE else TTSStages(threads=1)


def _user_job(job) -> tuple[tuple, float]:
    t0 = time.perf_counter()
    r = user_speech_job(_TTS, *job)
    return r, (time.perf_counter() - t0) * 1000


def _agent_job(text: str) -> tuple[tuple, float]:
    t0 = time.perf_counter()
    r = _TTS.agent_tts(text)
    return r, (time.perf_counter() - t0) * 1000


def _ready() -> int:
    return 0


def _done(fn, arg) -> Future:
    """``fn(arg)`` computed here, as a finished future (the TTS without worker processes)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(arg))
    except Exception as e:
        fut.set_exception(e)
    return fut


class BatchedExecutor:
    """``distill.pipeline.Executor`` over a TTS process pool and batched Whisper / LLM on a device."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
        self._pool = None
        self._agent = None
        if spec.tts_device:
            from distill.agent_tts import BatchedAgentTTS

            self._agent = BatchedAgentTTS(spec.tts_device, spec.tts_batch)
        cpu_tts = not (spec.speak_only and self._agent is not None)  # else no TTS is left for processes
        if cpu_tts and spec.tts_workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(spec.tts_workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_tts, initargs=(spec.stages, TTS_NICE))
            self._pool.submit(_ready)  # starts every process now: they load piper while the LLM loads here
        elif cpu_tts:
            _init_tts(spec.stages)
        if spec.stages.kind is StageKind.FAKE:
            from distill.stages import FakeStages

            self._gpu = FakeStages()  # a batched call sleeps sleep_s once, like one call on a GPU
        else:
            from distill.stages import RealStages

            # float32: batched decoding then rounds like one-by-one decoding (fp16 / bf16 flip tokens)
            self._gpu = RealStages(asr=None if spec.speak_only else "tiny.en", device=spec.device,
                                   threads=1 if spec.device == "cpu" else 4, llm_dtype="float32")
        self.models = {**self._gpu.models, "path": f"batched: Whisper + LLM on {spec.device}, "
                                                  f"TTS on {spec.tts_workers or 1} CPU process(es)"}
        piper = f"piper on {spec.tts_workers or 1} CPU process(es)"
        if self._agent is not None:
            piper = f"piper batched in torch on {spec.tts_device}"
            self.models["agent_tts"] = (f"piper en_US-joe-medium (noise 0) in torch (model.components.piper_torch), "
                                        f"batched on {spec.tts_device}")
            self.models["path"] += f"; agent TTS: {piper}"
        if spec.speak_only:
            self.models["path"] = (f"batched speak-only: LLM on {spec.device}, {piper}; user audio {SPEAK_USER_S} s "
                                   f"of silence, asr_text = planned text")
        self._said: list[str] = []  # speak-only: the planned texts of the last user_speech call
        # the flow runs the LLM while fewer agent jobs than this wait (a torch TTS call takes a batch)
        self.workers = spec.tts_batch if self._agent is not None else max(1, spec.tts_workers)
        self._quiet = np.zeros(int(SPEAK_USER_S * SPEECH_SR), np.float32)

    def close(self, cancel: bool = False) -> None:
        """Stop the TTS processes (``cancel``: drop queued jobs, finish the running ones)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=cancel)
        if self._agent is not None:
            self._agent.close(cancel)

    # --- streaming (distill.flow.stream_traces): one turn at a time ----------------------------
    def _submit(self, fn, arg) -> Future:
        return _done(fn, arg) if self._pool is None else self._pool.submit(fn, arg)

    def submit_user(self, job) -> Future:
        """-> Future of ((clean, augmented, pauses), ms); speak-only: silence, done at once."""
        if self.spec.speak_only:
            return _done(lambda _: ((self._quiet, self._quiet, []), 0.0), None)
        return self._submit(_user_job, job)

    def submit_agent(self, text: str) -> Future:
        """-> Future of ((audio, sr, word timings, timing source), ms)."""
        if self._agent is not None:
            return self._agent.submit(text)
        return self._submit(_agent_job, text)

    def hear(self, clips: list[tuple[np.ndarray, str]]) -> tuple[list[str], list[float]]:
        """(augmented clip, planned text) -> what ASR hears (speak-only: the planned text)."""
        if self.spec.speak_only:
            return [t for _, t in clips], [0.0] * len(clips)
        return self._asr([a for a, _ in clips])

    # --- stage by stage (distill.pipeline.generate_traces): many items per call ----------------

    def _map(self, fn, items: list) -> tuple[list, list[float]]:
        if not items:
            return [], []
        if self._pool is None:
            res = [fn(it) for it in items]
        else:
            res = list(self._pool.map(fn, items, chunksize=max(1, len(items) // (8 * self.spec.tts_workers))))
        return [r for r, _ in res], [round(ms, 1) for _, ms in res]

    def user_speech(self, jobs):
        if self.spec.speak_only:  # generate_traces calls asr next, on these clips in this order
            self._said = [pt.text for _, pt in jobs]
            return [(self._quiet, self._quiet, []) for _ in jobs], [0.0] * len(jobs)
        return self._map(_user_job, jobs)

    def agent_tts(self, texts):
        return self._agent.speak_timed(texts) if self._agent is not None else self._map(_agent_job, texts)

    def asr(self, audios: list[np.ndarray]) -> tuple[list[str], list[float]]:
        if self.spec.speak_only and audios:
            assert len(self._said) == len(audios), "speak-only: asr must follow user_speech"
            return list(self._said), [0.0] * len(audios)
        return self._asr(audios)

    def _asr(self, audios: list[np.ndarray]) -> tuple[list[str], list[float]]:
        if not audios:
            return [], []
        t0 = time.perf_counter()
        if self.spec.stages.kind is StageKind.FAKE:
            time.sleep(self.spec.stages.sleep_s)
            out = [self._gpu.asr(a) for a in audios]
        else:
            out = [t.strip() for t in self._gpu.whisper.transcribe_batch(audios, batch_size=self.spec.asr_batch)]
        ms = (time.perf_counter() - t0) * 1000 / len(audios)
        return out, [round(ms, 1)] * len(audios)

    def llm(self, reqs: list[tuple[list[dict], int]]) -> tuple[list[tuple[str, dict | None]], list[float]]:
        if not reqs:
            return [], []
        t0 = time.perf_counter()
        if self.spec.stages.kind is StageKind.FAKE:
            time.sleep(self.spec.stages.sleep_s)
            out = [self._gpu.llm(m, s) for m, s in reqs]
        else:
            from distill.llm_batch import ChatRequest, chat_batch

            out = chat_batch(self._gpu.chat, [ChatRequest(m, s) for m, s in reqs], max_rows=self.spec.llm_batch)
        ms = (time.perf_counter() - t0) * 1000 / len(reqs)
        return out, [round(ms, 1)] * len(reqs)
