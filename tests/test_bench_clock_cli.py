"""`parley bench clock` runs on CPU with the tiny random model and codec (what the GPU session
runs with --device cuda --weights random)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_clock_cpu_tiny(tmp_path) -> None:
    out = tmp_path / "clock.json"
    r = subprocess.run([sys.executable, "-m", "voice", "bench", "clock", "--batch", "1,2", "--ticks", "3",
                        "--device", "cpu", "--threads", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| cpu | tiny | tiny | bfloat16 | quant | False | 2 |" in r.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [x["batch"] for x in rows] == [1, 2] and all(x["step"]["p50_ms"] > 0 for x in rows)
    assert subprocess.run([sys.executable, "-m", "voice", "bench", "clock", "--batch", "x"],
                          capture_output=True, text=True, cwd=ROOT).returncode == 2
