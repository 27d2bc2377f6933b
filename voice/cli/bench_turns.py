"""`parley bench eot` (end-of-turn rules on a labeled spoken set, voice/bench/eot.py) and `parley bench judge`
(the end-of-turn judge's time per stage, voice/bench/judge.py). Registered by voice/cli/bench.py."""

from __future__ import annotations

import argparse


def register_turns(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("eot", help="end of turn: short pause + SmolLM2 scores (end-token mass, the "
                             "learned head), Smart Turn on the audio, vs VAD timeout, false cut-ins and delay on a labeled spoken set")
    p.add_argument("--pause-ms", type=float, default=200.0)
    p.add_argument("--stop-ms", type=float, default=544.0, help="fallback VAD timeout")
    p.add_argument("--voices", default=None, help="comma-separated TTS voices (default: joe + 4 flite voices)")
    p.add_argument("--out", default=None, help="JSON report")
    p.add_argument("--plot", default=None, help="PNG of the trade-off")
    p.add_argument("--rows-from", default=None, help="reuse the scored utterances of an earlier --out report")
    p.add_argument("--asr-at-pause", action="store_true",
                   help="time the decision as ASR started at the pause (default: at the silence onset, as the server)")
    p.add_argument("--head", default=None, help="end-of-turn head folder (default: weights/eou/)")
    p.set_defaults(func=eot_cmd)
    p = bench_sub.add_parser("eot-pauses", help="recorded speech: how many turns a shorter pause (--pause-ms) would "
                             "cut at an inner pause, and how many it ends at the pause")
    p.add_argument("--prompts", type=int, default=120, help="how many recorded prompts (sorted names)")
    p.add_argument("--out", default=None, help="JSON report")
    p.set_defaults(func=eot_pauses_cmd)
    p = bench_sub.add_parser("judge", help="the end-of-turn judge alone (Whisper, the head, Smart Turn): time "
                             "per stage, one at a time and concurrent, optionally beside busy Python threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--asr-backend", default="ct2", choices=["ct2", "torch"])
    p.add_argument("--rule", default="text", choices=["text", "audio", "both"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--load", type=int, default=0, help="busy Python threads beside the judge (GIL contention)")
    p.add_argument("--audio", default=None, help="question folder (default: the bench's flite questions)")
    p.add_argument("--out", default=None, help="JSON report")
    p.set_defaults(func=judge_cmd)


def eot_cmd(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from voice.bench.eot import EotConfig, format_report, run_eot  # noqa: PLC0415
    from voice.bench.facts import USER_VOICES  # noqa: PLC0415

    voices = tuple(v for v in args.voices.split(",") if v) if args.voices else USER_VOICES
    rows = None
    if args.rows_from:
        with open(args.rows_from) as f:
            rows = json.load(f)["rows"]
    report = run_eot(EotConfig(voices=voices, pause_ms=args.pause_ms, stop_ms=args.stop_ms, head_dir=args.head,
                               early_asr=not args.asr_at_pause, out_json=args.out, out_png=args.plot), rows)
    print(format_report(report))
    return 0


def judge_cmd(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from voice.bench.judge import JudgeBenchConfig, format_judge_report, run_judge_bench  # noqa: PLC0415

    rep = run_judge_bench(JudgeBenchConfig(device=args.device, asr_backend=args.asr_backend, rule=args.rule,
                                           reps=args.reps, concurrent=args.concurrent, load=args.load, audio=args.audio))
    print(format_judge_report(rep))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rep, f, indent=1)
    return 0


def eot_pauses_cmd(args: argparse.Namespace) -> int:
    from voice.bench.eot_pauses import EotPausesConfig, format_pauses_report, run_eot_pauses  # noqa: PLC0415

    print(format_pauses_report(run_eot_pauses(EotPausesConfig(n_prompts=args.prompts, out_json=args.out))))
    return 0
