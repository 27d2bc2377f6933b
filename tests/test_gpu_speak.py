"""distill/gpu_speak.sh (issue 11): the phased GPU script, dry-run on CPU with tiny settings (the
overlapped chain, its tokens brought back and carried into a second session that trains on both, then
a sequential resume), and `generate --max-minutes` (the budget it relies on)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from model.common.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "distill" / "gpu_speak.sh"


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_generate_time_budget_stops_then_resumes(tmp_path: Path) -> None:
    from distill.batched import BatchSpec
    from distill.runner import GenConfig, generate
    from distill.stages import StageKind, StagesSpec

    cfg = GenConfig(seed=2, stages=StagesSpec(StageKind.FAKE), speak_only=True, real_frac=0.0)
    s = generate(tmp_path / "d", 6, cfg, progress=False, batch=BatchSpec(block=2, tts_workers=0), max_minutes=0)
    assert s["written"] == 0 and s["missing"] == 6 and s["failed"] == 0  # no block starts after the budget
    s = generate(tmp_path / "d", 6, cfg, progress=False, batch=BatchSpec(block=2, tts_workers=0), max_minutes=5)
    assert s["written"] == 6 and s["missing"] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpu_dry_run_end_to_end(tmp_path: Path) -> None:
    """Session 1: stage -> start (the overlapped chain: generate + stats, tokenize --follow and train --follow
    + a full fine-tuning side arm at once, then eval) -> collect -> bring_tokens (parts over several calls).
    Session 2: its parts carried in over two stage calls, another seed; the chain trains on both folders;
    then start again with OVERLAP=0 (the sequential chain resumes: nothing to generate, train from last.pt)."""
    from codec.io import save_codec
    from codec.model import CodecConfig, ParleyCodec
    from distill.tokens import iter_token_turns

    codec = tmp_path / "codec"
    save_codec(ParleyCodec(CodecConfig(n_filters=4, dimension=8, lstm=0, n_q=4, bins=32)), codec, {"note": "tiny"})
    w, carry = tmp_path / "w", tmp_path / "carry"
    env = {**os.environ, "PY": sys.executable, "SKIP_KIT": "1", "DEVICE": "cpu", "STAGES": "fake:0.01",
           "TINY": "1", "N": "12", "BLOCK": "4", "TTS_WORKERS": "1", "GEN_MINUTES": "1", "TRAIN_MINUTES": "0.3",
           "CHAIN_MINUTES": "3", "TAIL_MINUTES": "0.5", "STEPS": "4", "BS": "4", "LOG_EVERY": "1",
           "ARMS": "full:--full-finetune",
           "EVAL_LIMIT": "2", "CODEC": str(codec), "W": str(w), "P": str(tmp_path / "repo"),
           "KIT": str(tmp_path / "kit"), "START_WAIT": "1", "WAIT": "200", "SHARD_TRACES": "4", "MIN_TURNS": "4",
           "RELOAD_S": "2", "TOK_POLL_S": "1", "CARRY": str(tmp_path / "nothing")}

    def phase(name: str, **more: str) -> str:
        r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO_ROOT, env={**env, "PHASE": name, **more},
                           capture_output=True, text=True, timeout=230)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    phase("stage")
    assert "imports ok" in phase("start")
    out = phase("collect")
    assert "CHAIN DONE" in out and "JOB STOPPED" in out, out
    back = {p.name for p in (w / "out").iterdir()}
    assert back == {"status.txt", "stats.json", "tokens_manifest.json", "history.jsonl", "s2s.tar", "codes.npz",
                    "logs.tgz", "arms.tar"}  # <= 8 files
    with tarfile.open(w / "out" / "arms.tar") as t:  # the side arm's export and its eval codes
        names = set(t.getnames())
    assert "w_full/s2s/manifest.json" in names and "codes_full.npz" in names, names
    assert json.loads((w / "out" / "stats.json").read_text())["traces"] == 12
    assert json.loads((w / "data" / "manifest.json").read_text())["seed"] == 2  # no priors: SEED 2
    assert "train_full:" in out and "arm full done" in (w / "train.log").read_text()  # the side arm (ARMS)
    chain = (w / "chain.log").read_text()
    assert chain.index("start tokenize") < chain.index("done generate") and "training starts" in chain  # at once
    assert "steps: generate:done stats:done tokenize:done train:done eval:done" in out
    assert "train pool:" in out and "train_full pool:" in out  # each trainer reloads (--follow)
    assert "passes" in json.loads((w / "tokenize.log").read_text().splitlines()[-1])  # the follow loop's summary
    with tarfile.open(w / "out" / "logs.tgz") as tar:
        assert {"run/history.jsonl", "run_full/history.jsonl", "train_full.log"} <= set(tar.getnames())
    assert json.loads((w / "run_full" / "history.jsonl").read_text().splitlines()[-1])["step"] >= 1

    # bring_tokens: the index + at most PARTS_PER_CALL parts a call, PART_FROM continues
    pack, part_from, calls = carry / "tokens-run2", 0, 0
    pack.mkdir(parents=True)
    while True:
        o = tmp_path / f"out{calls}"
        out = phase("bring_tokens", OUT=str(o), PART_MIB="0.001", PARTS_PER_CALL="2", PART_FROM=str(part_from))
        got = sorted(f.name for f in o.iterdir())
        assert got[0] == "tokens.index.json" and 2 <= len(got) <= 3, got  # <= 8 in a real call
        for f in o.iterdir():
            shutil.copy(f, pack)
        calls += 1
        m = re.search(r"more parts: PHASE=bring_tokens PART_FROM=(\d+)", out)
        if not m:
            break
        part_from = int(m.group(1))
    index = json.loads((pack / "tokens.index.json").read_text())
    assert calls >= 2 and len(index["parts"]) == len(list(pack.glob("tokens.part*")))
    assert index["shards"] == 3 and index["seed"] == 2 and index["left_out"] == 0

    # session 2: the parts come over two stage calls (a part missing at first); SEED defaults to 3
    w2 = tmp_path / "w2"
    env.update(W=str(w2), P=str(tmp_path / "repo2"), CARRY=str(carry), MIN_TURNS=str(index["turns"] + 1), ARMS="")
    held = tmp_path / "held"
    held.mkdir()
    shutil.move(pack / index["parts"][-1]["file"], held)
    assert "waiting for tokens.part" in phase("stage")
    shutil.move(held / index["parts"][-1]["file"], pack)
    moved_out = tmp_path / "codec_moved_out"  # the kit calls: the codec's folder left empty there (run 2)
    moved_out.mkdir()
    assert "tokens-run2: unpacked, seed 2, 3 shards" in phase("stage", CODEC=str(moved_out))
    out = phase("start")
    assert "prior tokens-run2: seed 2" in out and "seed 3" in out
    out = phase("collect")
    assert "CHAIN DONE" in out and "priors: 1 folder(s)" in out, out
    assert json.loads((w2 / "data" / "manifest.json").read_text())["seed"] == 3
    prior = sum(1 for t in iter_token_turns(w2 / "prior" / "tokens-run2", splits={"train"}) if t.user.shape[1])
    pools = re.findall(r"from (\d+) turns \((\d+) \+ (\d+)\)", (w2 / "train.log").read_text())
    total, p, new = map(int, pools[-1])  # the last pool line: the prior's turns + this session's
    assert p == prior > 0 and new > 0 and total == p + new, pools
    with tarfile.open(w2 / "out" / "s2s.tar") as tar:
        manifest = json.load(tar.extractfile("s2s/manifest.json"))  # type: ignore[arg-type]
    assert f"({p} + " in manifest["training_data"] and "tokens-run2" in manifest["training_data"]
    assert "in 1 prior folder(s)" in (w2 / "chain.log").read_text()

    assert "start" in phase("start", OVERLAP="0")  # resumes sequentially: nothing to generate, train resumes
    out = phase("collect", OVERLAP="0")
    assert "CHAIN DONE" in out, out
    assert json.loads((w2 / "generate.json").read_text())["already_done"] == 12
    log = (w2 / "train.log").read_text()
    assert "resumed from" in log and "reload:" not in log and "tokens-run2" in log  # both folders, not followed


@pytest.mark.timeout(300)
def test_cpu_prior_packs_with_the_next_seed(tmp_path: Path, tiny_codec: Path) -> None:
    """distill/cpu_prior.sh: Speak traces made here, tokenized, packed into PACKS/tokens-cpuSEED; the
    seed is one after the largest carried one, and the pack unpacks as a prior of that seed."""
    from distill.token_pack import check_priors, unpack_tokens

    carry = tmp_path / "packs"
    env = dict(os.environ, PY=sys.executable, PACKS=str(carry), CODEC=str(tiny_codec), STAGES="fake:0.01",
               MINUTES="0.03", TTS_WORKERS="1", BLOCK="4", NICE="0", POLL_S="1")
    for seed in (1, 2):
        r = subprocess.run(["bash", str(REPO_ROOT / "distill" / "cpu_prior.sh")], cwd=REPO_ROOT, capture_output=True,
                           text=True, env=dict(env, DATA=str(tmp_path / f"d{seed}")))
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"seed {seed}," in r.stdout
        index = json.loads((carry / f"tokens-cpu{seed}" / "tokens.index.json").read_text())
        assert index["seed"] == seed and index["turns"] > 0 and index["codec_id"]
        unpack_tokens(carry / f"tokens-cpu{seed}", tmp_path / "prior" / f"tokens-cpu{seed}", codec=tiny_codec)
    priors = check_priors(tmp_path / "prior", tiny_codec)
    assert [p.name for p in priors.folders] == ["tokens-cpu1", "tokens-cpu2"] and priors.seed == 3
