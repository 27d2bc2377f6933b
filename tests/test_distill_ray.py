"""`parley distill generate --ray local`: the same traces, same format, from Ray actors (one test:
starting Ray on 2 cores takes a while)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill import store
from distill.pipeline import content_view
from distill.runner import GenConfig, generate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_ray_local_matches_local_workers(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    d, ref = tmp_path / "ray", tmp_path / "ref"
    r = subprocess.run([sys.executable, "-m", "voice", "distill", "generate", "--out", str(d), "--n", "6",
                        "--seed", "4", "--stages", "fake", "--workers", "2", "--ray", "local", "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["written"] == 6
    generate(ref, 6, GenConfig(seed=4, stages="fake"), progress=False)

    def content(p: Path) -> dict:
        return {rec["index"]: (json.dumps(content_view(rec), sort_keys=True), sorted(rec["files"].items()))
                for rec, _ in store.iter_traces(p, want_audio=False)}

    assert content(d) == content(ref) and len(content(d)) == 6
    assert all(store.scan_shard(p).sealed for p in store.shard_paths(d))
