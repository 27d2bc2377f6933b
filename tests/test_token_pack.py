"""Token folders carried between GPU sessions (distill/token_pack.py): pack into parts, unpack with
sha256 and codec checks, the priors' seed rule, and the follow pool over prior + growing folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill.curriculum import Stage, stage_items
from distill.pool import TurnPool
from distill.runner import GenConfig, generate
from distill.s2s_data import layout_for, load_turns
from distill.token_pack import INDEX, check_priors, natural_key, pack_tokens, unpack_tokens
from distill.tokenize import tokenize
from distill.tokens import iter_token_turns, load_manifest
from model.common.errors import ParleyError

ROOT = Path(__file__).resolve().parent.parent


def fake_encode(text: str) -> list[int]:  # one token per character, ids < 64
    return [ord(c) % 64 for c in text]


def _tokens(d: Path, codec: Path, seed: int, n: int = 16) -> Path:
    generate(d, n, GenConfig(seed=seed, stages="fake", eval_frac=0.2), shard_traces=4, progress=False)
    tokenize(d, codec)
    return d / "tokens"


@pytest.fixture(scope="module")
def run2(tmp_path_factory, tiny_codec: Path) -> Path:
    """A token folder of seed 2 (4 shards) whose last manifest entry is marked open (not sealed)."""
    t = _tokens(tmp_path_factory.mktemp("run2") / "data", tiny_codec, seed=2)
    man = json.loads((t / "manifest.json").read_text())
    man["shards"][sorted(man["shards"])[-1]]["sealed"] = False
    (t / "manifest.json").write_text(json.dumps(man))
    return t


def test_pack_parts_unpack_roundtrip(run2: Path, tmp_path: Path) -> None:
    idx = pack_tokens(run2, tmp_path / "pack", max_mib=0.001)
    parts = idx["parts"]
    assert len(parts) >= 3 and all(p["bytes"] <= 0.001 * 2**20 for p in parts)
    assert idx["seed"] == 2 and idx["shards"] == 3 and idx["left_out"] == 1  # the open shard stays behind
    assert pack_tokens(run2, tmp_path / "again", max_mib=0.001)["sha256"] == idx["sha256"]  # deterministic
    before = (tmp_path / "pack" / parts[0]["file"]).stat().st_mtime_ns
    assert pack_tokens(run2, tmp_path / "pack", max_mib=0.001) == idx  # same selection: kept, not rewritten
    assert (tmp_path / "pack" / parts[0]["file"]).stat().st_mtime_ns == before

    carried = tmp_path / "carry" / "tokens-run2"  # the parts come over two calls
    carried.mkdir(parents=True)
    shutil.copy(tmp_path / "pack" / INDEX, carried)
    shutil.copy(tmp_path / "pack" / parts[0]["file"], carried)
    u = unpack_tokens(carried, tmp_path / "prior" / "tokens-run2")
    assert u.state == "incomplete" and u.missing == [p["file"] for p in parts[1:]] and "waiting for" in u.line("x")
    for p in parts[1:]:
        shutil.copy(tmp_path / "pack" / p["file"], carried)
    u = unpack_tokens(carried, tmp_path / "prior" / "tokens-run2")
    assert u.state == "unpacked" and "3 shards" in u.line("tokens-run2")
    prior = tmp_path / "prior" / "tokens-run2"
    man = load_manifest(prior)
    assert man["seed"] == 2 and len(man["shards"]) == 3 and man["codec_id"] == load_manifest(run2)["codec_id"]
    sealed = sorted(man["shards"])
    got = [(t.meta["key"], t.meta["turn"], t.agent.tolist()) for t in iter_token_turns(prior)]
    want = [(t.meta["key"], t.meta["turn"], t.agent.tolist()) for t in iter_token_turns(run2, shards=sealed)]
    assert got == want and got
    assert unpack_tokens(carried, prior).state == "present"
    with pytest.raises(ParleyError, match="not replaced"):  # a folder that no unpack made stays as it is
        unpack_tokens(carried, run2)


def test_damaged_part_and_other_codec_are_refused(run2: Path, tmp_path: Path, tiny_codec: Path) -> None:
    idx = pack_tokens(run2, tmp_path / "c", max_mib=0.001)
    assert unpack_tokens(tmp_path / "c", tmp_path / "ok", codec=tiny_codec).state == "unpacked"  # same codec
    other = tmp_path / "codec2"
    shutil.copytree(tiny_codec, other)
    f = sorted(other.glob("model-*.safetensors"))[0]
    f.write_bytes(f.read_bytes() + b" ")  # other weights bytes: another codec id
    with pytest.raises(ParleyError, match="refused: tokenized with codec"):
        unpack_tokens(tmp_path / "c", tmp_path / "no", codec=other)
    p = tmp_path / "c" / idx["parts"][1]["file"]
    p.write_bytes(b"x" + p.read_bytes()[1:])
    with pytest.raises(ParleyError, match="damaged"):
        unpack_tokens(tmp_path / "c", tmp_path / "no")
    assert not (tmp_path / "no").exists()


def test_priors_seed_rule_codec_refusal_and_order(run2: Path, tmp_path: Path, tiny_codec: Path) -> None:
    root = tmp_path / "prior"
    for name, seed in (("tokens-run10", 9), ("tokens-run2", 2), ("tokens-run3", 3), ("tokens-run3-copy", 3)):
        shutil.copytree(run2, root / name)
        man = json.loads((root / name / "manifest.json").read_text())
        man["seed"] = seed
        if name == "tokens-run10":
            man["codec_id"] = "0123456789abcdef"  # tokenized with another codec
        (root / name / "manifest.json").write_text(json.dumps(man))
    pr = check_priors(root, tiny_codec)
    assert [d.name for d in pr.folders] == ["tokens-run2", "tokens-run3"]  # oldest first; run10 refused
    assert pr.seed == 4 and any(line.startswith("prior tokens-run10 refused: tokenized with codec") for line in pr.lines)
    assert any(line.startswith("prior tokens-run3-copy refused: seed 3") for line in pr.lines)
    assert check_priors(root, tiny_codec, seed=7).seed == 7
    with pytest.raises(ParleyError, match="SEED 3 was used by prior tokens-run3"):
        check_priors(root, tiny_codec, seed=3)
    assert check_priors(tmp_path / "none", tiny_codec).seed == 2  # no priors: 2 (run 1 used 0)
    assert sorted(["run10", "run2", "run9"], key=natural_key) == ["run2", "run9", "run10"]
    r = subprocess.run([sys.executable, str(ROOT / "distill" / "token_pack.py"), "priors", str(root), "--codec",
                        str(tiny_codec), "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # runs as a file (the stage / start phases)
    assert (tmp_path / "seed").read_text() == "4\n" and len((tmp_path / "priors.txt").read_text().split()) == 2


def test_prior_plus_growing_folder(run2: Path, tmp_path: Path, tiny_codec: Path) -> None:
    """The follow pool takes a prior as fixed data and a folder that does not exist yet; load_turns keeps
    the folders' traces apart although both sessions' keys start at 00000000."""
    prior = tmp_path / "prior"
    shutil.copytree(run2, prior)
    new = tmp_path / "run3" / "data"
    layout = layout_for(prior, text_card=64)
    pool = TurnPool([prior, new / "tokens"], layout, Stage.SPEAK, val_frac=0.2, encode=fake_encode)
    r0 = pool.refresh()
    assert r0.shards == 4 and pool.folder_turns[1] == 0
    n0 = pool.turns
    _tokens(new, tiny_codec, seed=3)
    assert pool.refresh().shards == 4 and pool.refresh().shards == 0  # the prior is not loaded twice
    assert pool.folder_turns[0] == n0 and pool.turns == n0 + pool.folder_turns[1]
    assert f"from {pool.turns} turns ({n0} + {pool.folder_turns[1]})" in pool.describe()
    turns, _, _ = load_turns([prior, new / "tokens"], layout, encode=fake_encode)
    first, second = ({t.trace.removeprefix("1/") for t in turns if t.trace.startswith("1/") == b} for b in (False, True))
    assert first & second  # the same keys in both sessions
    traces = stage_items(turns, Stage.CONVERSE)
    assert all(len({t.name.startswith("1/") for t in tr}) == 1 for tr in traces)  # no trace mixes the sessions
