"""`parley codec sweep`: variants train side by side as separate processes through the real CLI,
with the quick held-out eval at each checkpoint, and the comparison table / plot come out."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from codec.sweep import Arm, parse_arm, plot_sweep, run_sweep, summarize
from codec.variants import VARIANTS, get_variant
from tests.test_codec_train import _shards


def test_variants_are_at_most_2_2_kbps() -> None:
    for name, v in VARIANTS.items():  # the lever arms; the trade-off arm stays under the 6 kbps
        assert v.codec.kbps <= (6.0 if "16q-sem" in name else 2.2) + 1e-9, name
        assert get_variant(name, tiny=True).codec.n_q == max(1, v.codec.n_q // 4)
        assert get_variant(name, tiny=True).codec.semantic_dim == v.codec.semantic_dim


def test_parse_arm() -> None:
    assert parse_arm("25hz") == Arm("25hz", "25hz", ())
    assert parse_arm("25hz@seg6:--segment-s 6.4 --batch-size 16") == Arm(
        "seg6", "25hz", ("--segment-s", "6.4", "--batch-size", "16"))
    with pytest.raises(KeyError):
        parse_arm("no-such-variant@x")
    with pytest.raises(ValueError, match="label"):
        parse_arm("25hz@../x")


def test_sweep_two_tiny_variants(tmp_path) -> None:
    _shards(tmp_path / "data")
    ev = tmp_path / "evalset"
    (ev / "eval").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, src in enumerate(("asterisk-en", "flite:slt")):  # one "real", one "synthetic" row
        sf.write(ev / f"eval/{i:04d}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        rows.append({"file": f"eval/{i:04d}.wav", "source": src, "id": str(i), "text": None})
    (ev / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "voice", "codec", "train"]
    args = ["--tiny", "--device", "cpu", "--max-steps", "4", "--batch-size", "2", "--segment-s", "0.5",
            "--data", str(tmp_path / "data"), "--eval-dir", str(ev), "--ckpt-every-s", "1000"]
    rc = run_sweep(["25hz", "12.5hz-16q@long:--segment-s 0.75"], tmp_path / "sweep", cmd, args, poll_s=1.0)
    assert rc == 0, (tmp_path / "sweep" / "25hz" / "train.log").read_text()[-2000:]
    table = {r["variant"]: r for r in summarize(tmp_path / "sweep")}
    assert set(table) == {"25hz", "long"}
    assert table["long"]["kbps"] == round(get_variant("12.5hz-16q").codec.kbps, 2)
    arm = json.loads((tmp_path / "sweep" / "long" / "arm.json").read_text())
    assert arm["variant"] == "12.5hz-16q" and arm["args"][-2:] == ["--segment-s", "0.75"]
    for r in table.values():
        assert r["real_mel_dist"] is not None and r["synthetic_mel_dist"] is not None
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())[0]["variant"] == "25hz"
    plot_sweep(tmp_path / "sweep", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
