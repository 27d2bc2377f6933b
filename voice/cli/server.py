"""`parley serve` (the real-time voice agent) and `parley talk` (a WebRTC client for it)."""

from __future__ import annotations

import argparse

from model.common.errors import ParleyError


def register(sub: argparse._SubParsersAction) -> None:
    from voice.engines import EngineKind  # noqa: PLC0415 - tiny module, no heavy imports

    unset = argparse.SUPPRESS  # engine options left out keep their config's default (one place)

    p = sub.add_parser(
        "serve",
        help="run the real-time voice agent (WebRTC + browser demo)",
        description="Serves the browser demo on / and WebRTC sessions on POST /offer. "
        "Open http://HOST:PORT/ in a browser and talk.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--engine", default="cascade", choices=[k.value for k in EngineKind])
    p.add_argument("--max-sessions", type=int, default=None,
                   help="concurrent sessions (more: 503); default 4, 1 for the direct engine on a CPU (one real-time "
                        "session is what a 2-core CPU holds: the model steps every slot)")
    p.add_argument("--workers", type=int, default=0,
                   help="front worker processes for WebRTC/Opus/VAD (SO_REUSEPORT); the engine stays in "
                   "this process (default 0: everything in one process)")
    p.add_argument("--engine-socket", default=None, help=argparse.SUPPRESS)  # a front worker's engine host
    p.add_argument("--loopback-ice", action=argparse.BooleanOptionalAction, default=None,
                   help="offer only 127.0.0.1 ICE candidates (default: on when --host is 127.0.0.1)")
    g = p.add_argument_group("turn taking")
    g.add_argument("--start-ms", type=float, help="speech needed to start a turn (default 256)")
    g.add_argument("--stop-ms", type=float, help="silence that ends a turn (default 544)")
    g.add_argument("--pause-ms", type=float,
                   help="speculative engines (the cascade, direct --semantic-turns): silence after which the turn "
                        "ends if the end-of-turn score says so, or once it does (default 192; 96 for direct "
                        "--semantic-turns; 32: as soon as the score says so)")
    g.add_argument("--no-echo-guard", action="store_true", help="disable the server-side echo guard")
    g.add_argument("--onset-hold-ms", type=float,
                   help="a sound during the agent's speech holds it until it goes quiet, at most this long unless "
                        "Silero calls it speech (default 320; 0: hold only once Silero does)")
    g.add_argument("--energy-end", action=argparse.BooleanOptionalAction, default=None,
                   help="speculative engines: time the pause from the energy end of speech (default) or, with "
                        "--no-energy-end, from Silero's")
    c = p.add_argument_group("cascade engine")
    c.add_argument("--asr", default=unset, help="Whisper model (default: bundled tiny.en)")
    c.add_argument("--asr-backend", default=unset, choices=["ct2", "torch"],
                   help="ct2: faster-whisper int8 (default, faster); torch: openai-whisper code (also the "
                        "direct engine's --semantic-turns)")
    c.add_argument("--asr-full-window", action="store_const", const=True, default=unset,
                   help="ct2: encode Whisper's whole 30 s window (default: only the clip, ~5x faster)")
    c.add_argument("--llm", default=unset, help="smollm2, a .gguf path or an OpenAI-compatible URL")
    c.add_argument("--llm-model", default=unset, help="model name for an OpenAI-compatible URL")
    c.add_argument("--voice", default=unset, help="TTS voice (default joe: piper)")
    c.add_argument("--tts-backend", default=unset, choices=["onnx", "torch"],
                   help="piper voices: onnx (onnxruntime on the CPU, default) or torch (on --device; on CUDA its "
                        "shapes are bucketed and planned at load)")
    c.add_argument("--max-new-tokens", type=int, default=unset)
    c.add_argument("--system", default=unset, help="system prompt")
    c.add_argument("--batch", action=argparse.BooleanOptionalAction, default=unset,
                   help="batch Whisper and LLM decoding across sessions (default: on for cuda, off on CPU)")
    d = p.add_argument_group("tone engine (tests, benchmarks)")
    d.add_argument("--delay-ms", type=float, default=unset, help="turn end -> reply (default 300)")
    d.add_argument("--reply-s", type=float, default=unset, help="tone length (default 2.0)")
    d.add_argument("--reply-wav", default=unset, help="answer with this WAV instead of a tone")
    p.add_argument("--device", default=None,
                   help="torch device for model engines (default: cpu for cascade, cuda if present for direct)")
    p.add_argument("--weights", default=unset,
                   help="direct engine: speech-model weights folder, or random (full size) / tiny (random, smoke)")
    p.add_argument("--codec", default=unset, help="direct engine: codec weights folder, or tiny (random, smoke)")
    p.add_argument("--dtype", default=unset, choices=["bfloat16", "float32", "float16"],
                   help="direct engine: the speech model's dtype (default bfloat16, also on CPU)")
    p.add_argument("--semantic-turns", action="store_const", const=True, default=unset,
                   help="direct engine: end a turn at a pause when Whisper + the end-of-turn head say the user is "
                        "done (as the cascade does; default: on silence, stop_ms)")
    p.add_argument("--turn-rule", default=unset, choices=["text", "audio", "both"],
                   help="direct --semantic-turns: what decides the turn is over: text (Whisper + the end-of-turn "
                        "head, default), audio (Smart Turn on the audio alone: no Whisper before the decision), both")
    p.add_argument("--cpu-step", default=unset, choices=["quant", "fast", "exact"],
                   help="direct engine on CPU: quant (default: fused step, int4/int8 weights), fast (fused, bf16), "
                        "exact (the reference modules in --dtype)")
    p.set_defaults(func=serve_cmd)

    t = sub.add_parser(
        "talk",
        help="ask a running `parley serve` a question from a WAV file over WebRTC",
        description="Plays QUESTION.wav as the microphone in real time, records the agent's "
        "reply, prints the transcript, the agent's text and the latency.",
    )
    t.add_argument("question", metavar="QUESTION.wav")
    t.add_argument("--url", default="http://127.0.0.1:8080")
    t.add_argument("--out", default=None, help="write the agent's reply audio here (WAV)")
    t.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    t.add_argument("--transcribe", action="store_true",
                   help="also print what Whisper tiny.en (here, on the CPU) hears in the reply")
    t.set_defaults(func=talk_cmd)


DIRECT_SEMANTIC_PAUSE_MS = 96.0  # the pause of `--engine direct --semantic-turns` unless --pause-ms says otherwise


def _turn_config(args: argparse.Namespace):  # noqa: ANN202
    from dataclasses import replace  # noqa: PLC0415

    from voice.server.turns import TurnConfig  # noqa: PLC0415

    cfg = TurnConfig()
    if args.start_ms is not None:
        cfg = replace(cfg, start_ms=args.start_ms)
    if args.stop_ms is not None:
        cfg = replace(cfg, stop_ms=args.stop_ms)
    if args.pause_ms is not None:
        cfg = replace(cfg, pause_ms=args.pause_ms)
    elif getattr(args, "engine", None) == "direct" and getattr(args, "semantic_turns", None) is True:
        # its judge (graphed Whisper + head, ~30 ms on a GPU) is known long before 96 ms; H200 run 4: v2v p50 166
        # vs 265 ms at 192, while 32 cut users at their inner pauses (voice/SERVING.md, bench eot-pauses)
        cfg = replace(cfg, pause_ms=DIRECT_SEMANTIC_PAUSE_MS)
    if args.no_echo_guard:
        cfg = replace(cfg, echo_guard=False)
    if args.onset_hold_ms is not None:
        cfg = replace(cfg, onset_hold_ms=args.onset_hold_ms)
    if args.energy_end is not None:
        cfg = replace(cfg, energy_end=args.energy_end)
    return cfg


_ENGINE_OPTIONS = {  # engine -> its config's fields that `parley serve` options set
    "cascade": ("asr", "asr_backend", "asr_full_window", "llm", "llm_model", "voice", "tts_backend", "max_new_tokens",
                "system", "device", "batch"),
    "tone": ("delay_ms", "reply_s", "reply_wav"),
    "direct": ("weights", "codec", "device", "max_sessions", "dtype", "cpu_step", "semantic_turns", "asr_backend",
               "turn_rule"),
}


def _engine_config(args: argparse.Namespace):  # noqa: ANN202 - one of the engines' configs
    """The typed config of `args.engine` from the options given (the rest keep their defaults)."""
    from voice.engines.cascade import CascadeConfig  # noqa: PLC0415
    from voice.engines.tone import ToneConfig  # noqa: PLC0415
    from voice.engines.direct import DirectConfig  # noqa: PLC0415

    config_class = {"cascade": CascadeConfig, "tone": ToneConfig, "direct": DirectConfig}[args.engine]
    given = {k: getattr(args, k) for k in _ENGINE_OPTIONS[args.engine] if getattr(args, k, None) is not None}
    if given.get("device") == "auto":
        del given["device"]
    return config_class(**given)


def max_sessions(args: argparse.Namespace) -> int:
    """--max-sessions, or its default: 4, but 1 for the direct engine on a CPU."""
    if args.max_sessions is not None:
        return args.max_sessions
    if args.engine != "direct":
        return 4
    if args.device not in (None, "auto"):
        return 1 if args.device == "cpu" else 4
    import torch  # noqa: PLC0415

    return 4 if torch.cuda.is_available() else 1


def serve_cmd(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from voice.engines import create_engine  # noqa: PLC0415
    from voice.server.app import Server, ServerConfig, run_server  # noqa: PLC0415

    args.max_sessions = max_sessions(args)
    if args.max_sessions < 1:
        raise ParleyError("--max-sessions must be at least 1")
    if not (0 < args.port < 65536):
        raise ParleyError(f"invalid --port {args.port}")
    if not getattr(args, "verbose", False):
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
    cfg = ServerConfig(host=args.host, port=args.port, max_sessions=args.max_sessions,
                       loopback_ice=args.loopback_ice, turn=_turn_config(args))
    if args.engine_socket:
        return _worker(args, cfg)
    if args.workers > 0:
        return _host(args)
    print(f"loading engine {args.engine} ...", flush=True)
    engine = create_engine(_engine_config(args))
    server = Server(engine, cfg)
    try:
        asyncio.run(run_server(server))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        raise ParleyError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0


def _worker(args: argparse.Namespace, cfg) -> int:  # noqa: ANN001 - a ServerConfig
    """A front worker: WebRTC sessions here, the engine in the host process (--engine-socket)."""
    import asyncio  # noqa: PLC0415

    from voice.engines.remote import RemoteEngine  # noqa: PLC0415
    from voice.server.app import Server, run_server  # noqa: PLC0415

    async def main() -> None:
        engine = RemoteEngine(args.engine_socket)
        await engine.connect()
        serve = asyncio.ensure_future(run_server(Server(engine, cfg), reuse_port=True))
        await asyncio.wait([serve, asyncio.ensure_future(engine.wait_closed())],
                           return_when=asyncio.FIRST_COMPLETED)  # the host gone: this worker ends
        serve.cancel()
        await asyncio.gather(serve, return_exceptions=True)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def _host(args: argparse.Namespace) -> int:
    """The engine here, behind a Unix socket; ``--workers`` processes serve WebRTC on the port."""
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from voice.engines import create_engine  # noqa: PLC0415
    from voice.engines.remote import EngineHost  # noqa: PLC0415

    print(f"loading engine {args.engine} ...", flush=True)
    engine = create_engine(_engine_config(args))
    path = str(Path(tempfile.mkdtemp(prefix="parley-")) / "engine.sock")
    argv = sys.argv[1:]  # the same command line for the workers, without --workers
    i = next(k for k, a in enumerate(argv) if a.startswith("--workers"))
    argv = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
    procs: list[subprocess.Popen] = []

    async def main() -> None:
        host = EngineHost(engine, path)
        await host.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        for _ in range(args.workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "voice", *argv, "--engine-socket", path]))
        print(f"engine host {path}: {args.workers} front worker(s) on {args.host}:{args.port}", flush=True)
        try:
            await stop.wait()
        finally:  # the workers first: their connections end, so the host's handlers end on EOF
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    await asyncio.to_thread(p.wait, 10)
                except subprocess.TimeoutExpired:
                    p.kill()
            await host.close()
            await engine.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    return 0


def talk_cmd(args: argparse.Namespace) -> int:
    from voice.client.talk import print_result, talk, transcribe_reply  # noqa: PLC0415

    result = talk(args.question, url=args.url, out=args.out, timeout=args.timeout)
    print_result(result)
    if args.transcribe and result.reply_audible:
        print(f"whisper:    {transcribe_reply(result) or '(no words heard)'}")
    return 0 if result.reply_audible else 1
