"""`parley bench AREA`: every benchmark of the project, one tree.

    components   load time / speed of VAD, ASR, TTS and LLM       (voice/bench/components.py)
                 --cascade-batch K,...: cascade one by one vs batched (voice/bench/cascade_batch.py)
    model, llm   direct speech model step time; LLM precision     (model/bench/)
    tts          piper joe: onnxruntime one by one vs torch batched (model/bench/tts.py, cli/bench_tts.py)
    latency, concurrency   client-side, over real WebRTC          (voice/bench/, voice/client/)
    echo         echo guard and echo hints, offline (Silero + piper)  (voice/bench/echo.py)
    codec        codec speed and latency                          (codec/bench.py)
    distill      trace generation throughput                      (distill/bench.py)

Registration is cheap; aiortc, numpy, torch and matplotlib are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.common.errors import ParleyError
from voice.cli.bench_tts import register_tts
from voice.cli.bench_turns import register_turns


def _split(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    return [p.strip() for v in items for p in v.split(",") if p.strip()]


def _ints(value: str | None, flag: str) -> tuple[int, ...]:
    """A comma-separated list of integers (``flag`` names it in the one-line error)."""
    try:
        return tuple(int(x) for x in _split(value))
    except ValueError:
        raise ParleyError(f"{flag}: expected comma-separated integers, got {value!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        action="append",
        help="server URL (http://HOST:PORT); repeat or comma-separate to compare servers; "
        "omitted: start a local `parley serve` per engine",
    )
    p.add_argument("--audio", help="user utterances: a WAV file or a folder of WAVs "
                   "(default: a few questions synthesized with flite)")
    p.add_argument("--engine", help="engine(s), comma-separated (e.g. cascade,direct); "
                   "with --url it is requested in the offer")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the local `parley serve` (repeatable)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--server-log", help="keep the local server's log here (default: deleted)")
    p.add_argument("--seed", type=int, default=0)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Every area of `parley bench`, in the order `parley bench --help` lists them."""
    _register_components(bench_sub)
    _register_model(bench_sub)
    register_tts(bench_sub)
    register_turns(bench_sub)
    _register_webrtc(bench_sub)
    _register_codec(bench_sub)
    _register_distill(bench_sub)


def _register_webrtc(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "latency",
        help="voice-to-voice and barge-in stop latency measured at a WebRTC client",
        description="Plays utterances in real time over WebRTC like a user, records the agent, "
        "and measures voice-to-voice latency (first agent audio - end of user speech) and "
        "barge-in stop latency (agent silent - start of interrupting speech).",
    )
    _common(p)
    p.add_argument("--turns", type=int, default=10, help="user turns per engine (default 10)")
    p.add_argument("--plot", help="write a PNG plot (CDF + stage breakdown per turn)")
    p.add_argument("--barge-in-every", type=int, default=3, metavar="K",
                   help="every K-th turn interrupts the agent (0: never; default 3)")
    p.add_argument("--barge-after", type=float, default=0.8, metavar="S",
                   help="interrupt S seconds after the reply became audible (default 0.8)")
    p.add_argument("--pause", type=float, default=0.8, metavar="S",
                   help="silence before each question (plus up to 0.6 s random; default 0.8)")
    p.add_argument("--reply-timeout", type=float, default=20.0, metavar="S")
    p.set_defaults(func=latency_cmd)

    c = bench_sub.add_parser(
        "concurrency",
        help="ramp simultaneous WebRTC sessions until real time breaks",
        description="Runs 1, 2, 4, ... --max (or the --max list) simultaneous sessions; a step is held when there "
        "are no output underruns (over 1% of frames) and voice-to-voice p90 stays under the "
        "limit. Reports the largest number of sessions held.",
    )
    _common(c)
    c.add_argument("--max", default="8", help="largest number of sessions to try, or the steps (e.g. 64,96,128)")
    c.add_argument("--turns", type=int, default=2, help="turns per session per step (default 2)")
    c.add_argument("--p90-limit-ms", type=float, default=None,
                   help="p90 voice-to-voice limit (default: 2x the p90 of one session, run first)")
    c.add_argument("--underrun-limit", type=float, default=0.01,
                   help="largest fraction of frames with underrun (default 0.01)")
    c.add_argument("--gap-limit", type=float, default=0.01,
                   help="largest fraction of the replies' time the server filled with silence (default 0.01)")
    c.add_argument("--client-procs", type=int, default=0, help="most client processes (default 0: half the "
                   "cores); a step of n sessions runs in ceil(n / --sessions-per-proc) (one holds ~8: ~0.1 core each)")
    c.add_argument("--sessions-per-proc", type=int, default=8, help="sessions per client process (default 8)")
    c.set_defaults(func=concurrency_cmd)


def _quiet_logs(args: argparse.Namespace) -> None:
    """aioice/aiortc log every ICE check at INFO: keep the progress display readable."""
    import logging  # noqa: PLC0415

    if not getattr(args, "verbose", False):
        for name in ("aioice", "aiortc", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _targets(args: argparse.Namespace, default_engine: str = "cascade") -> list:
    """The `Target`s to measure: URLs (each with its engine, if given) or local servers per engine."""
    from voice.bench.runs import Target  # noqa: PLC0415
    from voice.client.peer import check_url  # noqa: PLC0415

    urls = _split(args.url)
    engines = _split(args.engine)
    if not urls:
        return [Target(None, e) for e in (engines or [default_engine])]
    if len(urls) > 1 and engines and len(engines) != len(urls):
        raise ParleyError("give one --engine per --url, or none")
    pairs = [(urls[0], e) for e in (engines or [None])] if len(urls) == 1 else \
        list(zip(urls, engines or [None] * len(urls)))
    for url, _ in pairs:
        check_url(url)
    return [Target(url, e) for url, e in pairs]


def _utterances(args: argparse.Namespace):  # noqa: ANN202
    from voice.bench.utterances import default_utterances, load_utterances  # noqa: PLC0415

    return load_utterances(args.audio) if args.audio else default_utterances()


def latency_cmd(args: argparse.Namespace) -> int:
    from voice.bench.latency import LatencyConfig  # noqa: PLC0415
    from voice.bench.runs import run_latency  # noqa: PLC0415

    if args.turns < 1:
        raise ParleyError("--turns must be at least 1")
    _quiet_logs(args)
    targets = _targets(args)
    cfg = LatencyConfig(turns=args.turns, pause_s=args.pause, barge_in_every=args.barge_in_every,
                        barge_after_s=args.barge_after, reply_timeout_s=args.reply_timeout, seed=args.seed)
    return run_latency(targets, _utterances(args), cfg, args.server_arg, out=args.out, plot=args.plot,
                       server_log=args.server_log)


def concurrency_cmd(args: argparse.Namespace) -> int:
    from voice.bench.concurrency import ConcurrencyConfig, parse_steps  # noqa: PLC0415
    from voice.bench.runs import run_concurrency  # noqa: PLC0415

    steps = parse_steps(args.max)
    if args.client_procs < 0 or args.sessions_per_proc < 1:
        raise ParleyError("--sessions-per-proc must be at least 1, --client-procs at least 0")
    _quiet_logs(args)
    cfg = ConcurrencyConfig(max_sessions=steps[-1], steps=steps if len(steps) > 1 else (), turns=args.turns,
                            p90_limit_ms=args.p90_limit_ms, underrun_limit=args.underrun_limit, gap_limit=args.gap_limit,
                            seed=args.seed, client_procs=args.client_procs, sessions_per_proc=args.sessions_per_proc)
    return run_concurrency(_targets(args), _utterances(args), cfg, args.server_arg, out=args.out, server_log=args.server_log)


def _register_model(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("model", help="direct speech model: per-frame step time vs batch size")
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"], help="default: all available")
    p.add_argument("--batch", default="1,8,64", help="comma-separated batch sizes")
    p.add_argument("--context", type=int, default=128, help="frames already in each session's context")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: 50 on CUDA, 5 on CPU)")
    p.add_argument("--cpu-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                   help="the exact CPU step's dtype (default bfloat16, as served)")
    p.add_argument("--cpu-step", default="exact,quant",
                   help="CPU steps side by side: exact (the reference modules), fast (fused, bf16 weights), "
                        "quant (fused, 4/8-bit weights: served on CPU); default exact,quant")
    p.add_argument("--weights", default="gguf",
                   help="gguf (SmolLM2 backbone + random speech parts, default), random, or a trained folder")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="tiny dimensions (smoke test)")
    p.add_argument("--audio-head", default="depth", help="depth, delay or depth,delay (compare both)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF for the backbone's shape (default: bundled)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=model_cmd)
    p = bench_sub.add_parser("clock", help="direct engine's frame clock (codec encode + model step + decode) vs batch")
    p.add_argument("--batch", default="1,8,64", help="comma-separated batch sizes (every slot active)")
    p.add_argument("--ticks", type=int, default=20, help="timed frames per batch size")
    p.add_argument("--weights", default="tiny", help="tiny, random (full size) or a trained folder")
    p.add_argument("--codec", default="tiny", help="tiny (random) or a codec folder, e.g. weights/codec")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when present")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=clock_cmd)
    p = bench_sub.add_parser("facts", help="cascade: 24 spoken factual questions x voices -> ASR -> LLM, "
                             "accuracy greedy vs sampled")
    p.add_argument("--voices", default=None, help="comma-separated TTS voices (default: joe + 4 flite voices)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.set_defaults(func=facts_cmd)
    p = bench_sub.add_parser("asr", help="cascade ASR: short window vs the 30 s window, speed and WER on 50 clips")
    p.add_argument("--repeats", type=int, default=1, help="passes over the clips (timing)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.set_defaults(func=asr_cmd)
    p = bench_sub.add_parser("echo", help="echo guard offline: a wrong echo hint over a loud echo, "
                             "early barge-ins per hint (the numbers of voice/README.md)")
    p.add_argument("--out", default=None, help="also write the rows to this JSON file")
    p.set_defaults(func=echo_cmd)
    p = bench_sub.add_parser("llm", help="local LLM: time to first token and decode speed per dtype")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--tokens", type=int, default=48, help="greedy tokens per measurement")
    p.set_defaults(func=llm_cmd)


def model_cmd(args: argparse.Namespace) -> int:
    from model.bench.step import StepBenchConfig, run_bench
    from model.cpu_step import CpuStep

    heads = tuple(_split(args.audio_head))
    if bad := [h for h in heads if h not in ("depth", "delay")]:
        raise ParleyError(f"--audio-head: unknown head(s) {bad} (depth, delay)")
    cpu_steps = tuple(_split(args.cpu_step))
    if bad := [c for c in cpu_steps if c not in {s.value for s in CpuStep}] or not cpu_steps:
        raise ParleyError(f"--cpu-step: unknown step(s) {bad} ({', '.join(s.value for s in CpuStep)})")
    batches = _ints(args.batch, "--batch")
    return run_bench(StepBenchConfig(
        device=args.device, batches=batches, context=args.context, steps=args.steps, cpu_dtype=args.cpu_dtype,
        cpu_steps=cpu_steps, weights=args.weights, threads=args.threads, tiny=args.tiny, audio_heads=heads,
        gguf=args.gguf, json_path=args.json))


def clock_cmd(args: argparse.Namespace) -> int:
    from voice.bench.clock import ClockBenchConfig, run_bench

    batches = _ints(args.batch, "--batch")
    if not batches or min(batches) < 1 or args.ticks < 1:
        raise ParleyError("--batch and --ticks must be positive")
    return run_bench(ClockBenchConfig(batches=batches, ticks=args.ticks, weights=args.weights, codec=args.codec,
                                      device=args.device, threads=args.threads, json_path=args.json))
def facts_cmd(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from voice.bench.cascade_eval import FactsConfig, run_facts  # noqa: PLC0415

    cfg = FactsConfig(out=args.out)
    if args.voices:
        cfg = FactsConfig(voices=tuple(_split(args.voices)), out=args.out)
    report = run_facts(cfg)
    print(json.dumps({k: v for k, v in report.items()}, indent=1))
    return 0


def echo_cmd(args: argparse.Namespace) -> int:
    from voice.bench.echo import run_echo_bench  # noqa: PLC0415

    run_echo_bench(args.out)
    return 0


def asr_cmd(args: argparse.Namespace) -> int:
    from voice.bench.asr_eval import AsrBenchConfig, run_asr_bench  # noqa: PLC0415

    report = run_asr_bench(AsrBenchConfig(repeats=args.repeats, out=args.out))
    print(f"{report['clips']} clips, load {report['load_avg_1m']}")
    for k, v in report["variants"].items():
        print(f"{k:13s} p50 {v['p50_ms']:6.1f} ms  p90 {v['p90_ms']:6.1f} ms  WER (synthetic) "
              f"{100 * v['wer_synthetic']:4.1f} %  words differing from the 30 s window {100 * v['diff_to_full']:4.1f} %")
    for d in report["differences"]:
        print(f"  {d['clip']}: {d['full_30s']!r} -> {d['short_window']!r}")
    return 0


def llm_cmd(args: argparse.Namespace) -> int:
    from model.bench.llm import run_bench

    return run_bench(threads=args.threads, tokens=args.tokens)


def _register_components(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("components", help="load time / speed of VAD, ASR, TTS and LLM on this machine")
    p.add_argument("--skip", default="", help="comma-separated components to skip (vad,asr,tts,llm)")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline measurements")
    p.add_argument("--llm", default="smollm2", help="LLM spec for model.components.llm.load_llm")
    p.add_argument("--json", help="also write the rows as JSON to this path")
    g = p.add_argument_group("cascade batching (instead of the component rows)")
    g.add_argument("--cascade-batch", metavar="K,...", help="K concurrent cascade requests (ASR + LLM), one by one "
                   "vs batched across sessions, e.g. 1,4,8 (voice/bench/cascade_batch.py)")
    g.add_argument("--device", default="cpu", help="torch device of the cascade's models (cpu, cuda)")
    g.add_argument("--asr-backend", default="torch", choices=["torch", "ct2"],
                   help="torch: one batched Whisper pass (default); ct2 transcribes a batch clip by clip")
    g.add_argument("--audio", help="question WAV/FLAC folder (default: questions synthesized with flite)")
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=components_cmd)


def components_cmd(args: argparse.Namespace) -> int:
    if args.cascade_batch:
        from voice.bench.cascade_batch import BatchBenchConfig, run_bench as run_batch  # noqa: PLC0415

        ks = _ints(args.cascade_batch, "--cascade-batch")
        if not ks or min(ks) < 1:
            raise ParleyError("--cascade-batch wants request counts >= 1, e.g. 1,4,8")
        return run_batch(BatchBenchConfig(ks=ks, device=args.device, asr_backend=args.asr_backend,
                                          max_new_tokens=args.max_new_tokens, audio=args.audio,
                                          threads=args.threads, json_path=args.json))
    from voice.bench.components import run_bench

    return run_bench(
        skip={s.strip() for s in args.skip.split(",") if s.strip()},
        baseline=not args.no_baseline,
        llm_spec=args.llm,
        json_path=args.json,
    )


def _register_codec(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("codec", help="codec: streaming RTF on one CPU core, GPU batched throughput, latency")
    p.add_argument("--weights", default=None)
    p.add_argument("--seconds", type=float, default=10.0, help="audio length for the CPU streaming run")
    p.add_argument("--device", default="cpu", help="'cpu' (streaming, 1 thread) or 'cuda' (batched)")
    p.add_argument("--batch", type=int, default=64, help="GPU batch size")
    p.add_argument("--rounds", type=int, default=3, help="CPU: interleaved rounds over the streaming paths")
    p.add_argument("--stream-batch", type=int, default=1, help="CPU: streams per call (the clock's sessions)")
    p.set_defaults(func=codec_cmd)


def codec_cmd(args: argparse.Namespace) -> int:
    from codec.bench import run_bench

    run_bench(args.weights, seconds=args.seconds, device=args.device, batch=args.batch, rounds=args.rounds,
              stream_batch=args.stream_batch)
    return 0


def _register_distill(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("distill", help="distill: traces/min and audio h/min for 1 core, all cores, cores + GPU")
    p.add_argument("--n", type=int, default=8, help="traces per configuration")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="per-trace worker counts instead of the default arms (1 core, all cores, cores + GPU)")
    p.add_argument("--cores", type=int, default=None, help="cores of the 'all cores' arms (default: all)")
    p.add_argument("--no-gpu", action="store_true", help="leave out the cores + GPU arm")
    p.add_argument("--speak-only", action="store_true", help="speak-only traces (LLM + piper; all arms batched)")
    p.add_argument("--stages", default="real")
    p.add_argument("--keep", type=Path, default=None, help="keep the bench traces in this folder")
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.set_defaults(func=distill_cmd)


def distill_cmd(args: argparse.Namespace) -> int:
    from distill.bench import BenchArm, default_arms, run_bench
    from distill.stages import StagesSpec

    arms = ([BenchArm(f"{k} worker(s)", k) for k in args.workers] if args.workers
            else default_arms(args.n, args.cores, False if args.no_gpu else None, args.speak_only))
    print(run_bench(n=args.n, arms=arms, stages=StagesSpec.parse(args.stages), keep=args.keep, threads=args.threads,
                    speak_only=args.speak_only))
    return 0
