"""`parley bench components`: load time and speed of each bundled model on this machine.

Rows: VAD (per 32 ms chunk), ASR (RTF on real recorded speech), TTS (RTF, first audio),
LLM (time to first token, tokens/s). Baselines, measured in the same run on the same input:
ASR vs faster-whisper (the original CTranslate2 weights), VAD vs the silero-vad package's own
ONNX wrapper, TTS streaming first-audio vs synthesizing the whole text first.
RTF = compute time / audio duration (lower is faster; < 1 is faster than real time).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.common.audio_constants import SPEECH_SR, VAD_CHUNK

TTS_TEXT = (
    "Sure, I can help with that. The train to Boston leaves at nine fifteen from platform two, "
    "and it takes about four hours. Would you like me to check the return times as well?"
)
LLM_CHECK = "What is the capital of France? Answer in one sentence."  # correctness note
LLM_PROMPT = "Tell me a short story about a cat who learns to swim."  # long enough for tokens/s


@dataclass
class Row:
    component: str
    model: str
    load_s: float | None
    metric: str
    value: float | None
    baseline: str = ""
    baseline_value: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def print_table(rows: list[Row]) -> None:
    head = ["component", "model", "load s", "metric", "value", "baseline", "baseline value", "ratio", "note"]
    lines = [head] + [[r.component, r.model, _fmt(r.load_s), r.metric, _fmt(r.value), r.baseline or "-",
                       _fmt(r.baseline_value), _fmt(r.ratio), r.note] for r in rows]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for ln in lines[1:]:
        print("| " + " | ".join(ln) + " |")


def _speech() -> tuple[list[np.ndarray], list[str]]:
    from model.audio import load_audio
    from model.samples import SHORT_PROMPTS, prompt_wav

    names = list(SHORT_PROMPTS)
    return [load_audio(prompt_wav(n), SPEECH_SR)[0] for n in names], names


def bench_vad(rows: list[Row], speech: list[np.ndarray], baseline: bool) -> None:
    from model.components.vad import SileroVAD

    t0 = time.perf_counter()
    vad = SileroVAD.load()
    load = time.perf_counter() - t0
    x = np.concatenate(speech)
    chunks = x[: len(x) // VAD_CHUNK * VAD_CHUNK].reshape(-1, VAD_CHUNK)
    s = vad.stream()
    for c in chunks[:20]:  # warm-up
        s.push(c)
    s.reset()
    t0 = time.perf_counter()
    for c in chunks:
        s.push(c)
    ms = (time.perf_counter() - t0) / len(chunks) * 1e3
    # batched: 16 streams per step (what a server with 16 calls does)
    states = [vad.stream().state for _ in range(16)]
    t0 = time.perf_counter()
    n = min(len(chunks), 200)
    for c in chunks[:n]:
        vad.step(states, np.repeat(c[None], 16, axis=0))
    ms16 = (time.perf_counter() - t0) / n / 16 * 1e3
    base = None
    if baseline:
        base = _silero_package_ms(chunks)
    rows.append(Row("VAD", "silero v6 onnx", load, "ms / 32 ms chunk", ms, "silero-vad pkg OnnxWrapper", base))
    rows.append(Row("VAD", "silero v6 onnx", None, "ms / chunk / stream (16 streams batched)", ms16))


def _silero_package_ms(chunks: np.ndarray) -> float | None:
    """Per-chunk time of silero-vad's own wrapper (torch tensors in/out) on the same chunks."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad.utils_vad import OnnxWrapper  # sets torch threads to 1 on import

        from model.components.vad import bundled_model_path

        m = OnnxWrapper(str(bundled_model_path()), force_onnx_cpu=True)
        tc = torch.from_numpy(chunks)
        for c in tc[:20]:
            m(c, SPEECH_SR)
        m.reset_states()
        t0 = time.perf_counter()
        for c in tc:
            m(c, SPEECH_SR)
        return (time.perf_counter() - t0) / len(tc) * 1e3
    except Exception:
        return None
    finally:
        torch.set_num_threads(threads)


def bench_asr(rows: list[Row], speech: list[np.ndarray], baseline: bool) -> None:
    import torch

    from model.components.asr import WhisperASR, bundled_ct2_dir
    from model.components.whisper_convert import convert_cached

    with tempfile.TemporaryDirectory() as tmp:  # cold conversion: read, map, hash, write safetensors
        t0 = time.perf_counter()
        convert_cached(bundled_ct2_dir() / "model.bin", Path(tmp))
        convert = time.perf_counter() - t0
    WhisperASR.load("tiny.en")  # make sure the converted cache exists
    t0 = time.perf_counter()
    asr = WhisperASR.load("tiny.en")
    load = time.perf_counter() - t0
    dur = sum(len(x) for x in speech) / SPEECH_SR
    asr.transcribe(speech[0])  # warm-up
    t0 = time.perf_counter()
    ours = [asr.transcribe(x) for x in speech]
    rtf = (time.perf_counter() - t0) / dur
    t0 = time.perf_counter()
    asr.transcribe_batch(speech)
    rtf_batch = (time.perf_counter() - t0) / dur
    base_rtf, wer_note = None, ""
    if baseline:
        try:
            from faster_whisper import WhisperModel

            fw = WhisperModel(str(bundled_ct2_dir()), device="cpu", compute_type="float32",
                              cpu_threads=torch.get_num_threads())

            def fw_text(x: np.ndarray) -> str:
                segs, _ = fw.transcribe(x, language="en", beam_size=1, without_timestamps=True,
                                        vad_filter=False, condition_on_previous_text=False)
                return " ".join(s.text.strip() for s in segs)

            fw_text(speech[0])
            t0 = time.perf_counter()
            ref = [fw_text(x) for x in speech]
            base_rtf = (time.perf_counter() - t0) / dur
            wer_note = f"WER vs faster-whisper {_wer(ref, ours):.3f}"
        except ImportError:
            wer_note = "faster-whisper not installed"
    note = f"{len(speech)} real utterances, {dur:.0f} s; {wer_note}; first-run CT2->safetensors conversion {convert:.2f} s (then cached)"
    rows.append(Row("ASR", "whisper tiny.en (openai-whisper code)", load, "RTF, one utterance at a time",
                    rtf, "faster-whisper (CT2 original)", base_rtf, note))
    rows.append(Row("ASR", "whisper tiny.en (openai-whisper code)", None,
                    f"RTF, batch of {len(speech)}", rtf_batch))


def _wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    def norm(t: str) -> str:
        return " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in t.lower()).split())

    return float(jiwer.wer([norm(r) for r in refs], [norm(h) for h in hyps]))


def bench_tts(rows: list[Row]) -> None:
    from model.components.tts import load_voice

    for name in ("joe", "flite:slt", "espeak:en-us+m3"):
        t0 = time.perf_counter()
        v = load_voice(name)
        load = time.perf_counter() - t0
        v.synthesize("Warm up.")
        t0 = time.perf_counter()
        it = v.stream(TTS_TEXT)
        first = next(it)
        first_s = time.perf_counter() - t0
        audio = np.concatenate([first, *it])
        total = time.perf_counter() - t0
        rtf = total / (len(audio) / v.sample_rate)
        rows.append(Row("TTS", name, load, "RTF", rtf, note=f"{len(audio) / v.sample_rate:.1f} s of speech"))
        rows.append(Row("TTS", name, None, "first audio s (clause streaming)", first_s,
                        "whole text first", total))


def bench_llm(rows: list[Row], spec: str) -> None:
    try:
        from model.components.llm import load_llm
    except ImportError as e:
        note = f"model.components.llm not available ({e})"
        rows.append(Row("LLM", spec, None, "time to first token s", None, note=note))
        return
    t0 = time.perf_counter()
    llm = load_llm(spec)
    load = time.perf_counter() - t0
    check = llm.chat([{"role": "user", "content": LLM_CHECK}], max_new_tokens=24, temperature=0.0, seed=0)
    msgs = [{"role": "user", "content": LLM_PROMPT}]
    t0 = time.perf_counter()
    first, n, text = None, 0, []
    if hasattr(llm, "stream_steps"):  # local backend: one step per generated token
        steps = llm.stream_steps(msgs, max_new_tokens=64, temperature=0.0, seed=0)
        pieces = (s.text for s in steps)
        unit = "tokens"
    else:
        pieces = llm.stream_chat(msgs, max_new_tokens=64, temperature=0.0, seed=0)
        unit = "streamed pieces"
    for piece in pieces:
        if first is None:
            first = time.perf_counter() - t0
        n += 1
        text.append(piece or "")
    total = time.perf_counter() - t0
    tps = (n - 1) / (total - first) if first is not None and n > 1 else None
    answer = check.strip().replace("|", "/")[:60]
    rows.append(Row("LLM", spec, load, "time to first token s", first, note=f"capital of France? -> {answer!r}"))
    rows.append(Row("LLM", spec, None, f"{unit}/s (decode, greedy)", tps, note=f"{n} {unit}"))


def run_bench(skip: set[str], baseline: bool, llm_spec: str, json_path: str | None) -> int:
    import logging

    import torch

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)

    rows: list[Row] = []
    cpu = platform.processor() or platform.machine()
    print(f"# parley bench components  {time.strftime('%Y-%m-%d')}  {cpu}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"cuda: {torch.cuda.is_available()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    speech = _speech()[0] if {"vad", "asr"} - skip else []
    steps = [("asr", lambda: bench_asr(rows, speech, baseline)), ("tts", lambda: bench_tts(rows)),
             ("llm", lambda: bench_llm(rows, llm_spec)), ("vad", lambda: bench_vad(rows, speech, baseline))]
    for name, fn in steps:  # VAD last: its baseline imports silero_vad (touches torch threads)
        if name not in skip:
            fn()
    print_table(rows)
    if json_path:
        with open(json_path, "w") as f:
            json.dump([asdict(r) | {"ratio": r.ratio} for r in rows], f, indent=1)
    return 0
