"""Data made where the compute is: the batched generation path of the GPU machine (issue 11).

    BatchedExecutor(BatchSpec(device="cuda", tts_workers=15, llm_batch=128))

- user speech (espeak-ng / flite / piper + augmentation) and agent speech (piper joe) run on
  ``tts_workers`` CPU processes (spawned, each loads the TTS voices once, one thread each);
- Whisper and the LLM run on ``device``, batched across traces (``WhisperASR.transcribe_batch``,
  ``distill.llm_batch.chat_batch``), one model copy in the driver process;
- ``distill.pipeline.generate_traces`` drives them stage by stage over a block of traces.
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
from dataclasses import dataclass

import numpy as np

from distill.pipeline import user_speech_job
from model.common.audio_constants import SPEECH_SR
from distill.stages import StageKind, StagesSpec

_TTS = None  # the worker process's TTS stages
SPEAK_USER_S = 0.32  # speak-only traces: the user's clip is this much silence (4 codec frames)


@dataclass(frozen=True)
class BatchSpec:
    """How the batched path spreads the stages (built from `parley distill generate --batched`)."""

    stages: StagesSpec = StagesSpec()
    device: str = "cpu"  # Whisper and the LLM: "cuda" on the GPU machine
    tts_workers: int = 0  # CPU processes for the TTS stages; 0: in this process
    asr_batch: int = 32
    llm_batch: int = 128
    block: int = 256  # traces per generate_traces call (one LLM batch per turn round)
    speak_only: bool = False  # Speak data: no user voices, no Whisper (asr_text = the planned text)


def _init_tts(spec: StagesSpec) -> None:
    global _TTS
    import torch

    from distill.stages import FakeStages, TTSStages

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


class BatchedExecutor:
    """``distill.pipeline.Executor`` over a TTS process pool and batched Whisper / LLM on a device."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
        self._pool = None
        if spec.tts_workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(spec.tts_workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_tts, initargs=(spec.stages,))
        else:
            _init_tts(spec.stages)
        if spec.stages.kind is StageKind.FAKE:
            from distill.stages import FakeStages

            self._gpu = FakeStages(spec.stages.sleep_s)
        else:
            from distill.stages import RealStages

            # float32: batched decoding then rounds like one-by-one decoding (fp16 / bf16 flip tokens)
            self._gpu = RealStages(asr=None if spec.speak_only else "tiny.en", device=spec.device,
                                   threads=1 if spec.device == "cpu" else 4, llm_dtype="float32")
        self.models = {**self._gpu.models, "path": f"batched: Whisper + LLM on {spec.device}, "
                                                  f"TTS on {spec.tts_workers or 1} CPU process(es)"}
        if spec.speak_only:
            self.models["path"] = (f"batched speak-only: LLM on {spec.device}, piper on {spec.tts_workers or 1} "
                                   f"CPU process(es); user audio {SPEAK_USER_S} s of silence, asr_text = planned text")
        self._said: list[str] = []  # speak-only: the planned texts of the last user_speech call

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

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
            quiet = np.zeros(int(SPEAK_USER_S * SPEECH_SR), np.float32)
            return [(quiet, quiet, []) for _ in jobs], [0.0] * len(jobs)
        return self._map(_user_job, jobs)

    def agent_tts(self, texts):
        return self._map(_agent_job, texts)

    def asr(self, audios: list[np.ndarray]) -> tuple[list[str], list[float]]:
        if not audios:
            return [], []
        if self.spec.speak_only:
            assert len(self._said) == len(audios), "speak-only: asr must follow user_speech"
            return list(self._said), [0.0] * len(audios)
        t0 = time.perf_counter()
        if self.spec.stages.kind is StageKind.FAKE:
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
            out = [self._gpu.llm(m, s) for m, s in reqs]
        else:
            from distill.llm_batch import ChatRequest, ChatSettings, chat_batch
            from distill.stages import LLM_MAX_NEW_TOKENS, LLM_MAX_SENTENCES, LLM_TEMPERATURE

            cs = ChatSettings(LLM_MAX_NEW_TOKENS, LLM_TEMPERATURE, 0.9, LLM_MAX_SENTENCES)
            out = []
            for i in range(0, len(reqs), self.spec.llm_batch):
                chunk = [ChatRequest(m, s) for m, s in reqs[i : i + self.spec.llm_batch]]
                out += chat_batch(self._gpu.chat, chunk, cs)
        ms = (time.perf_counter() - t0) * 1000 / len(reqs)
        return out, [round(ms, 1)] * len(reqs)
