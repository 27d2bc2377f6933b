"""LLM precision benchmark on this machine: ``parley bench llm [--threads N]``.

For each (decode dtype, prefill dtype) of the local SmolLM2 engine: time to first token for a
short and a long chat prompt, median decode time per token, and whether the greedy reply equals
the fp32 one. Baseline: fp32 for both. (``parley bench components`` reports the default only.)
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time

CONFIGS = [("float32", None), ("float16", None), ("bfloat16", None), ("float16", "bfloat16"), ("float16", "float32")]
SHORT = [{"role": "user", "content": "What is the capital of France?"}]


def long_chat() -> list[dict]:
    """A multi-turn conversation of a few hundred tokens (a voice session after a while)."""
    turns = ["Hi, I'm planning a trip to Europe next spring.", "I like museums, food and long walks.",
             "Which cities would you recommend for a first visit?", "How many days should I stay in each?",
             "What about trains between them?", "And what should I pack for April weather?"]
    msgs: list[dict] = []
    for i, t in enumerate(turns):
        msgs.append({"role": "user", "content": t})
        if i < len(turns) - 1:
            msgs.append({"role": "assistant", "content": "That sounds lovely. Paris, Amsterdam and Vienna are "
                         "great first stops, with world-class museums, easy walks and excellent food. Trains "
                         "connect them well, and three or four days in each is a comfortable pace."})
    return msgs


def measure(engine, tok, msgs: list[dict], n_new: int) -> tuple[float, list[float], list[int]]:
    from model.sampling import SamplingParams

    ids = tok.encode_chat(msgs)
    params = SamplingParams(temperature=0.0)
    t0 = time.perf_counter()
    stamps, toks = [], []
    for step in engine.generate(ids, n_new, params, stop_ids=()):
        stamps.append(time.perf_counter())
        toks.append(step.token)
    ttft = stamps[0] - t0
    return ttft, [b - a for a, b in zip(stamps, stamps[1:])], toks


def run_bench(threads: int = 1, tokens: int = 48) -> int:
    """Prints one table row per (decode, prefill) dtype pair; `tokens` greedy tokens per measurement."""
    import torch

    from model.text_generator import TextGenerator
    from model.gguf import load_gguf

    torch.set_num_threads(threads)
    base, tok = load_gguf(dtype=torch.float32)
    n_short, n_long = len(tok.encode_chat(SHORT)), len(tok.encode_chat(long_chat()))
    print(f"# parley bench llm  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}, "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"{threads} thread(s); SmolLM2-135M Q4_1 dequantized; prompts {n_short} and {n_long} tokens, "
          f"{tokens} greedy tokens")
    print("| decode | prefill | TTFT short (ms) | TTFT long (ms) | decode ms/token (median) | x fp32 decode | greedy = fp32 |")
    print("|---|---|---|---|---|---|---|")
    ref_toks, ref_dec = None, None
    for dec, pre in CONFIGS:
        model = copy.deepcopy(base).to(getattr(torch, dec))
        prefill = copy.deepcopy(base).to(getattr(torch, pre)) if pre else None
        eng = TextGenerator(model, tok, prefill_model=prefill)
        measure(eng, tok, SHORT, 4)  # warm-up
        ttft_s, gaps, toks_s = measure(eng, tok, SHORT, tokens)
        ttft_l, gaps_l, toks_l = measure(eng, tok, long_chat(), tokens)
        ms = statistics.median(gaps + gaps_l) * 1000
        if ref_toks is None:
            ref_toks, ref_dec = (toks_s, toks_l), ms
        same = f"{int(toks_s == ref_toks[0]) + int(toks_l == ref_toks[1])}/2"
        print(f"| {dec} | {pre or dec} | {ttft_s * 1000:.0f} | {ttft_l * 1000:.0f} | {ms:.1f} | "
              f"{ref_dec / ms:.2f} | {same} |", flush=True)
        del model, prefill, eng
    return 0

