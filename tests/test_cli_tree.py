"""The `parley` command tree: every command is listed, and a broken command module fails loudly."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from voice.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"bench", "say", "transcribe", "serve", "talk", "codec", "distill", "eou"}
BENCH_AREAS = {"components", "model", "clock", "llm", "asr", "facts", "eot", "eot-pauses", "judge", "echo", "latency", "concurrency",
               "codec", "distill", "tts"}


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_help_lists_every_command_and_bench_area() -> None:
    parser = build_parser()
    commands = _choices(parser)
    assert set(commands) == COMMANDS
    assert set(_choices(commands["bench"])) == BENCH_AREAS
    text = parser.format_help()
    assert all(name in text for name in COMMANDS)


def test_a_broken_command_module_stops_parley_with_its_error() -> None:
    code = ("import sys; sys.modules['voice.cli.codec'] = None\n"  # as if its import failed
            "from voice.cli.main import main; main(['--help'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "voice.cli.codec" in r.stderr


def test_serve_max_sessions_default_and_direct_dtype() -> None:
    """The direct engine on a CPU holds one real-time session (the model steps every slot): default 1;
    elsewhere 4; an explicit value wins. --dtype reaches the direct engine's config."""
    from voice.cli.server import _engine_config, max_sessions

    parser = build_parser()
    assert max_sessions(parser.parse_args(["serve", "--engine", "direct", "--device", "cpu"])) == 1
    assert max_sessions(parser.parse_args(["serve", "--engine", "direct", "--device", "cuda"])) == 4
    assert max_sessions(parser.parse_args(["serve", "--engine", "cascade", "--device", "cpu"])) == 4
    assert max_sessions(parser.parse_args(["serve", "--engine", "direct", "--device", "cpu", "--max-sessions", "3"])) == 3
    args = parser.parse_args(["serve", "--engine", "direct", "--dtype", "float32", "--max-sessions", "2"])
    cfg = _engine_config(args)
    assert cfg.dtype == "float32" and cfg.max_sessions == 2
    assert _engine_config(parser.parse_args(["serve", "--engine", "direct"])).dtype == "bfloat16"


def test_direct_semantic_turns_get_the_short_pause() -> None:
    from voice.cli.main import build_parser
    from voice.cli.server import DIRECT_SEMANTIC_PAUSE_MS, _turn_config

    def pause(*argv: str) -> float:
        return _turn_config(build_parser().parse_args(["serve", *argv])).pause_ms

    assert pause("--engine", "direct", "--semantic-turns") == DIRECT_SEMANTIC_PAUSE_MS == 96.0
    assert pause("--engine", "direct", "--semantic-turns", "--pause-ms", "192") == 192.0
    assert pause("--engine", "cascade") == pause("--engine", "direct") == 192.0
