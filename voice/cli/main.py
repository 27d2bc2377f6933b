"""The `parley` command line: one console script, subcommands registered by each command module.

Each module in `COMMANDS` defines `register(sub)` (top-level subcommands) and/or
`register_bench(bench_sub)` (the areas of `parley bench`: bench.py). Registration only builds
argparse parsers; handlers import heavy modules (torch, models) lazily, so `parley --help` is instant.
A handler is stored as `func` on its parser and receives the parsed `argparse.Namespace`.
The modules are imported directly: a broken one stops `parley` with its error (never dropped).
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from model.common.errors import ParleyError
from voice.cli import bench as bench_areas
from voice.cli import codec, components, distill, eou, server

COMMANDS: tuple[ModuleType, ...] = (
    components,  # say, transcribe
    server,  # serve, talk
    bench_areas,  # bench components, model, llm, latency, concurrency, codec, distill
    codec,  # codec prepare-data/train/eval/plot-log/encode/decode
    distill,  # distill generate/stats/tokenize/train/eval
    eou,  # eou train/score: the cascade's end-of-turn head
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: an open, offline, real-time speech-to-speech voice agent.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = sub.add_parser("bench", help="every benchmark: parley bench AREA (see parley bench -h)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="AREA")
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    for mod in COMMANDS:
        if hasattr(mod, "register"):
            mod.register(sub)
        if hasattr(mod, "register_bench"):
            mod.register_bench(bench_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except ParleyError as e:
        print(f"parley: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("parley: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
