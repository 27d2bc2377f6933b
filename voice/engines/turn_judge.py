"""Semantic end of turn for the direct engine: at a pause, is the user done?

The direct model has no transcript of the user (its monologue is the agent's), so alone it can only
have its turns ended on silence: stop_ms 544 + Silero's lag, 620 of the 711 ms voice-to-voice one
H200 measured (voice/SERVING.md, 2026-12-02). `TurnJudge` makes the cascade's decision for it:
Whisper transcribes the turn so far at its first silent chunk and the end-of-turn head
(`model/components/eou_head.py`, one SmolLM2 forward) scores the text; the server ends the turn at
the pause (`TurnConfig.pause_ms`, 192) when the score reaches the head's threshold, else after
`semantic_stop_ms` (800). OpenAI's Realtime API calls this "semantic VAD"; LiveKit's turn detector
also scores its STT transcript.

    judge = TurnJudge(JudgeConfig(device="cuda", asr_backend="torch"))
    prob, text = await judge.judge_async(audio_16k)     # prob >= judge.threshold: the turn is over

Transcriptions of all sessions share one batched Whisper pass on a GPU (`ASRBatcher`, as the
cascade's); the scores run one by one on the judge's thread (~5 ms each on a GPU, ~35 ms on 2 cores).
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JudgeConfig:
    asr: str = "tiny.en"  # Whisper model (bundled tiny.en)
    asr_backend: str = "ct2"  # "ct2" (faster-whisper int8) or "torch" (openai-whisper: CUDA 13 hosts)
    llm: str = "smollm2"  # the LLM the end-of-turn head reads (its features are this model's)
    eou_head: str | None = None  # head folder (default weights/eou/)
    device: str = "cpu"
    batch: bool | None = None  # batch Whisper across sessions (default: on cuda)


class TurnJudge:
    """P(the user's turn is over | what they said so far) for engines without a transcript."""

    def __init__(self, cfg: JudgeConfig = JudgeConfig(), *, asr=None, llm=None) -> None:  # noqa: ANN001
        from model.components.eou_head import EOU_DIR, load_eou_scorer  # noqa: PLC0415

        if asr is None:
            from model.components.asr_ct2 import load_asr  # noqa: PLC0415

            asr = load_asr(cfg.asr, device=cfg.device, backend=cfg.asr_backend)
        if llm is None:
            from model.components.llm import load_llm  # noqa: PLC0415

            llm = load_llm(cfg.llm, device=cfg.device)
        self.asr, self.llm = asr, llm
        self.eou = load_eou_scorer(cfg.eou_head or EOU_DIR)
        self.threshold = float(self.eou.threshold)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="parley-judge")
        self.batcher = None
        if cfg.batch if cfg.batch is not None else cfg.device.startswith("cuda"):
            from voice.engines.batching import ASRBatcher  # noqa: PLC0415

            self.batcher = ASRBatcher(asr)

    def warm_up(self) -> None:
        """Transcriptions and scores of a few lengths, on the threads the turns will use, so the first turns do
        not pay for the first calls (2026-12-02, this CPU: the first judgement took 767 ms, the next ones ~250;
        H200 run 3: with one call on the main thread, Whisper 198-229 ms on the first two turns, ~100 after)."""
        rng = np.random.default_rng(0)
        for seconds, text in ((0.5, "hello there"), (3.0, "can you tell me a short story about a cat")):
            noise = (0.01 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
            if self.batcher is not None:
                self.batcher.submit(noise).result()
            else:
                self.pool.submit(self.asr.transcribe, noise).result()
            self.pool.submit(self.eou.score, self.llm, text, None).result()

    def score(self, text: str, context: str | None = None) -> float:  # the judge's thread
        """The head's score of a transcript; 0 for one without words (noise is not a finished turn)."""
        return float(self.eou.score(self.llm, text, context=context)) if re.search(r"\w", text) else 0.0

    async def judge_async(self, audio_16k: np.ndarray, context: str | None = None,
                          times: dict[str, float] | None = None) -> tuple[float, str]:
        """(score, transcript) of a turn so far (16 kHz float32); `times` gets "asr" and "score" in ms."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        if self.batcher is not None:
            text = await asyncio.wrap_future(self.batcher.submit(audio_16k))
        else:
            text = await loop.run_in_executor(self.pool, lambda: self.asr.transcribe(audio_16k).strip())
        t1 = time.perf_counter()
        prob = await loop.run_in_executor(self.pool, self.score, text, context)
        if times is not None:
            times.update(asr=1000 * (t1 - t0), score=1000 * (time.perf_counter() - t1))
        return prob, text

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
