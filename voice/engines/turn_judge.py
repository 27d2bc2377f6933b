"""Semantic end of turn for the direct engine: at a pause, is the user done?

The direct model has no transcript of the user (its monologue is the agent's), so alone it can only
have its turns ended on silence: stop_ms 544 + Silero's lag, 620 of the 711 ms voice-to-voice one
H200 measured (voice/SERVING_RUNS.md, run 1, 2026-12-02). `TurnJudge` makes the decision for it at the first
silent chunk; the server ends the turn once the pause (`TurnConfig.pause_ms`) is reached and the
score reaches the judge's threshold, else after `semantic_stop_ms` (800). Three rules (`JudgeConfig.rule`):

    text   Whisper transcribes the turn so far and the end-of-turn head (`model/components/eou_head.py`,
           one SmolLM2 forward) scores the text, as the cascade does (LiveKit's turn detector also
           scores its STT transcript; OpenAI's Realtime API calls this "semantic VAD")
    audio  Smart Turn (`model/components/smart_turn.py`) scores the audio alone (intonation, rhythm):
           no Whisper before the decision; the transcript follows for the client only
    both   the turn is over when both say so (Smart Turn runs beside Whisper)

    judge = TurnJudge(JudgeConfig(device="cuda", asr_backend="torch", rule="text"))
    prob, text = await judge.judge_async(audio_16k)     # prob >= judge.threshold: the turn is over
    # text is None with rule "audio": judge.transcribe(audio_16k) is a Future of it

Transcriptions of all sessions share one batched Whisper pass on a GPU (`ASRBatcher`, as the
cascade's); the head's scores run one by one on the judge's thread (~5 ms each on a GPU, ~35 ms on
2 cores); Smart Turn on its own thread (onnxruntime, CPU, ~45-55 ms on one core of this machine).
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

RULES = ("text", "audio", "both")


@dataclass(frozen=True)
class JudgeConfig:
    asr: str = "tiny.en"  # Whisper model (bundled tiny.en)
    asr_backend: str = "ct2"  # "ct2" (faster-whisper int8) or "torch" (openai-whisper: CUDA 13 hosts)
    llm: str = "smollm2"  # the LLM the end-of-turn head reads (its features are this model's)
    eou_head: str | None = None  # head folder (default weights/eou/)
    device: str = "cpu"
    batch: bool | None = None  # batch Whisper across sessions (default: on cuda)
    rule: str = "text"  # what decides: "text" (Whisper + the head), "audio" (Smart Turn), "both"
    audio_threshold: float | None = None  # Smart Turn's threshold (default: its own, 0.5)
    audio_threads: int = 1  # onnxruntime threads of Smart Turn


class TurnJudge:
    """P(the user's turn is over | what they said so far) for engines without a transcript."""

    def __init__(self, cfg: JudgeConfig = JudgeConfig(), *, asr=None, llm=None) -> None:  # noqa: ANN001
        from model.components.eou_head import EOU_DIR, load_eou_scorer  # noqa: PLC0415

        if cfg.rule not in RULES:
            raise ValueError(f"unknown end-of-turn rule {cfg.rule!r} (one of {', '.join(RULES)})")
        self.rule = cfg.rule
        if asr is None:
            from model.components.asr_ct2 import load_asr  # noqa: PLC0415

            asr = load_asr(cfg.asr, device=cfg.device, backend=cfg.asr_backend)
        if llm is None:
            from model.components.llm import load_llm  # noqa: PLC0415

            llm = load_llm(cfg.llm, device=cfg.device)
        self.asr, self.llm = asr, llm
        self.eou = load_eou_scorer(cfg.eou_head or EOU_DIR)
        self.smart = None
        if cfg.rule != "text":
            from model.components.smart_turn import SmartTurn  # noqa: PLC0415

            self.smart = SmartTurn.load(threads=cfg.audio_threads)
        self.audio_threshold = float(cfg.audio_threshold if cfg.audio_threshold is not None
                                     else self.smart.threshold if self.smart else 0.5)
        # the score compared with `threshold` (EndOfTurn): the head's, or Smart Turn's for "audio"
        self.threshold = self.audio_threshold if cfg.rule == "audio" else float(self.eou.threshold)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="parley-judge")
        self.audio_pool = ThreadPoolExecutor(1, thread_name_prefix="parley-smart-turn") if self.smart else None
        self.batcher = None
        if cfg.batch if cfg.batch is not None else cfg.device.startswith("cuda"):
            from voice.engines.batching import ASRBatcher  # noqa: PLC0415

            self.batcher = ASRBatcher(asr)

    def warm_up(self) -> None:
        """Transcriptions and scores of a few lengths, on the threads the turns will use, so the first turns do
        not pay for the first calls (2026-12-02, this CPU: the first judgement took 767 ms, the next ones ~250;
        H200 run 3: with one call on the main thread, Whisper 198-229 ms on the first two turns, ~100 after)."""
        from model.components.eou_graph import graphed_hidden  # noqa: PLC0415

        if (run := graphed_hidden(self.llm)) is not None:  # CUDA graphs of the head's forward, captured now
            self.pool.submit(run.prepare).result()
        if hasattr(self.asr, "prepare"):  # and of Whisper's decoder steps (torch Whisper on a GPU)
            self.asr.prepare()
        rng = np.random.default_rng(0)
        for seconds, text in ((0.5, "hello there"), (3.0, "can you tell me a short story about a cat")):
            noise = (0.01 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
            if self.batcher is not None:
                self.batcher.submit(noise).result()
            else:
                self.pool.submit(self.asr.transcribe, noise).result()
            self.pool.submit(self.eou.score, self.llm, text, None).result()
            if self.smart is not None:
                self.audio_pool.submit(self.smart.prob, noise).result()

    def transcribe(self, audio_16k: np.ndarray) -> Future:
        """A Future of the turn's transcript (stripped): batched on a GPU, else on the judge's thread."""
        if self.batcher is not None:
            return self.batcher.submit(audio_16k)
        return self.pool.submit(lambda: self.asr.transcribe(audio_16k).strip())

    def score(self, text: str, context: str | None = None) -> float:  # the judge's thread
        """The head's score of a transcript; 0 for one without words (noise is not a finished turn)."""
        return float(self.eou.score(self.llm, text, context=context)) if re.search(r"\w", text) else 0.0

    async def judge_async(self, audio_16k: np.ndarray, context: str | None = None,
                          times: dict[str, float] | None = None) -> tuple[float, str | None]:
        """(score, transcript) of a turn so far (16 kHz float32); `times` gets the ms of "asr", "score" and
        "audio" (Smart Turn). With rule "audio" the transcript is None (not waited for: `transcribe`)."""
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        times = {} if times is None else times
        audio_fut = None
        if self.smart is not None:
            audio_fut = asyncio.wrap_future(self.audio_pool.submit(self.smart.prob, audio_16k))
            if self.rule == "audio":
                prob = await audio_fut
                times["audio"] = 1000 * (time.perf_counter() - t0)
                return prob, None
        text = await asyncio.wrap_future(self.transcribe(audio_16k))
        t1 = time.perf_counter()
        prob = await loop.run_in_executor(self.pool, self.score, text, context)
        times.update(asr=1000 * (t1 - t0), score=1000 * (time.perf_counter() - t1))
        if audio_fut is not None:  # "both": the turn is over only if Smart Turn says so too
            p_audio = await audio_fut
            times["audio"] = 1000 * (time.perf_counter() - t0)
            prob = prob if p_audio >= self.audio_threshold else 0.0
        return prob, text

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.audio_pool is not None:
            self.audio_pool.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
