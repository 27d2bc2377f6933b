"""The end-of-turn head without the LLM: fitting, the weights file (roundtrip, damage, absence),
the training data (held-out evaluation sentences, labels) and the shipped weights/eou/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from model.common.errors import ParleyError
from model.components.eou_head import (
    EOU_DIR, EouHead, EouHeadConfig, LogMassScorer, head_file, load_eou_head, load_eou_scorer, save_eou_head,
)
from voice.bench.eot import SENTENCES
from voice.eou.data import (
    EVAL_ENDINGS, EVAL_FIRST_PARTS, EouDataConfig, TailLabel, build_dataset, eval_key, is_tail_cut, near_eval,
)
from voice.eou.train import auc, fit_logistic, standardize, weighted_log_loss


def _blobs(n: int = 400, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float64)
    x = rng.standard_normal((n, d)) + 1.5 * (2 * y[:, None] - 1) * np.eye(d)[0]  # classes apart along dim 0
    return x, y


def test_fit_lowers_the_loss_and_separates_the_classes() -> None:
    x, y = _blobs()
    mean, scale = standardize(x)
    v, b = fit_logistic((x - mean) / scale, y, np.ones(len(y)), l2=1e-3)
    head = EouHead(EouHeadConfig(hidden_dim=x.shape[1] - 1), mean, scale, v, b)
    p = head.prob(x)
    assert weighted_log_loss(p, y, np.ones(len(y))) < 0.5 * np.log(2)  # well below chance (p = 0.5 everywhere)
    assert np.mean((p >= 0.5) == (y == 1)) > 0.9 and auc(p, y) > 0.95
    assert abs(v[0]) > 5 * np.abs(v[1:]).max()  # the one informative feature carries the weight


def test_sample_weights_move_the_decision() -> None:
    x, y = _blobs(seed=1)
    ones = np.ones(len(y))
    heavy_neg = np.where(y == 0, 10.0, 1.0)
    _, b1 = fit_logistic(x, y, ones, l2=1e-3)
    _, b2 = fit_logistic(x, y, heavy_neg, l2=1e-3)
    assert b2 < b1 - 0.5  # negatives that count more push every score down


def _head(dim: int = 6, threshold: float = 0.7, seed: int = 0) -> EouHead:
    rng = np.random.default_rng(seed)
    return EouHead(EouHeadConfig(hidden_dim=dim, threshold=threshold), rng.standard_normal(dim + 1),
                   rng.uniform(0.5, 2, dim + 1), rng.standard_normal(dim + 1), 0.3)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    head = _head()
    f = save_eou_head(head, tmp_path, {"note": "test"})
    back = load_eou_head(tmp_path)
    assert back.cfg == head.cfg and back.threshold == 0.7
    x = np.random.default_rng(1).standard_normal((5, head.cfg.dim))
    np.testing.assert_allclose(back.prob(x), head.prob(x), rtol=1e-5)  # float32 on disk
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["note"] == "test" and man["config"]["threshold"] == 0.7 and f.name in man["files"]


def test_a_damaged_head_is_a_one_line_error(tmp_path: Path) -> None:
    f = save_eou_head(_head(), tmp_path)
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ParleyError, match="corrupt") as e:
        load_eou_head(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(ParleyError, match="corrupt"):  # the cascade does not fall back on a damaged file
        load_eou_scorer(tmp_path)
    f.write_bytes(bytes(data[:40]))  # truncated, manifest updated to match: safetensors itself fails
    man = json.loads((tmp_path / "manifest.json").read_text())
    from model.common.checkpoint import file_sha256

    man["files"][f.name]["sha256"] = file_sha256(f)
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ParleyError, match="corrupt end-of-turn head"):
        load_eou_head(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ParleyError, match="manifest.json"):
        load_eou_head(tmp_path)


def test_no_head_file_falls_back_to_the_end_token_mass_and_says_so_once(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    with pytest.raises(ParleyError, match="no end-of-turn head"):
        load_eou_head(tmp_path)
    with caplog.at_level(logging.WARNING, logger="model.components.eou_head"):
        a, b = load_eou_scorer(tmp_path), load_eou_scorer(tmp_path)
    assert isinstance(a, LogMassScorer) and isinstance(b, LogMassScorer) and a.threshold == 0.2
    assert sum("no end-of-turn head" in r.message for r in caplog.records) == 1


def test_the_shipped_head_loads_and_matches_its_manifest() -> None:
    head = load_eou_head()  # checks the sha256 of manifest.json
    man = json.loads((EOU_DIR / "manifest.json").read_text())
    assert head.cfg.dim == 577 and head.threshold == man["config"]["threshold"]
    assert head_file().stat().st_size < 100_000  # tiny: committed in git
    assert man["data"]["counts"]["train_utterances"] > 1000 and "eval_sentences_text_only" in man["eval"]


def test_training_data_holds_out_the_eval_sentences() -> None:
    data = build_dataset()
    keys = [" ".join(u.words) for u in data.utterances]
    firsts = {eval_key(f) for f, _ in SENTENCES}
    fulls = {eval_key(f"{f} {r}") for f, r in SENTENCES}
    assert set(EVAL_FIRST_PARTS) == firsts and len(EVAL_ENDINGS) == len(SENTENCES)
    for k in keys:
        e = eval_key(k)
        assert e not in fulls and not any(e == f or e.startswith(f + " ") for f in firsts), k
        assert not any(e.endswith(" " + end) for end in EVAL_ENDINGS), k
    # the filter did remove real source lines (the templates and facts hold eval-like sentences)
    removed = {eval_key(t) for t in data.excluded}
    assert "what is the capital of france" in removed and "why is the sky blue" in removed
    assert "what is the difference between weather and climate" in removed  # "what's" expanded
    assert "who wrote romeo and juliet" in removed  # same last three words
    assert near_eval("How many legs does a cat have?") and not near_eval("How many cats live here?")


def test_labels_of_the_cut_points() -> None:
    data = build_dataset()
    assert data.counts() == build_dataset().counts()  # deterministic
    u = next(u for u in data.utterances if u.words[:2] == ("hi", "there") and "how" in u.words)
    assert 2 not in u.cuts  # "hi there," ends at a comma: not a negative
    assert is_tail_cut(("tell", "me", "a", "joke", "about", "cats"), 4)  # optional tail: skipped
    assert not is_tail_cut(("what", "is", "the", "capital", "of", "peru"), 4)
    tails = build_dataset(EouDataConfig(tail=TailLabel.NEGATIVE))
    assert sum(len(u.cuts) for u in tails.utterances) > sum(len(u.cuts) for u in data.utterances)
    for u in data.utterances:
        assert all(0 < k < len(u.words) for k in u.cuts) and not u.ends
        w = u.neg_weights(1.0)
        assert len(u.cuts) == 0 or (abs(w.sum() - 1.0) < 1e-9 and np.all(np.diff(w) > 0))  # longer cuts count more
