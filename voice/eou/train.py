"""Train the end-of-turn head (`parley eou train`): features from SmolLM2, logistic regression.

    report = train_head(EouTrainConfig(), llm)   # writes weights/eou/ (safetensors + manifest.json)

1. Data: `voice/eou/data.py` (utterances, cut points, weights; deterministic).
2. Features: one forward per utterance (+ context) gives the whole and every cut prefix
   (`eou.features_at`); each prefix's tokens are checked to be a prefix of the whole's.
3. Fit: features standardized, weighted L2 logistic regression (scikit-learn, L-BFGS, float64);
   L2 strength chosen on the validation split (held-out templates) by weighted log loss, then
   refit on train + validation with it (the shipped head).
4. Report: validation numbers of the train-only fit, and text-only scores of the 20 evaluation
   sentences of voice/bench/eot.py (never trained on; the spoken evaluation is `parley bench eot`).
Deterministic for one machine: the features come from the LLM the cascade runs (bf16 prefill on
CPUs with native bf16, float32 elsewhere), so another CPU gives slightly different weights.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.components.eou import end_ids, features_at, normalize, prompt_text
from model.components.eou_head import EOU_DIR, EouHead, EouHeadConfig, save_eou_head
from voice.bench.eot import SENTENCES
from voice.eou.data import EouData, EouDataConfig, build_dataset

THRESHOLD = 0.93  # the shipped threshold, chosen with `parley bench eot` (voice/README.md, End of turn)
THRESHOLD_CHOICE = {  # what it was chosen on (demos/cascade/eot3.json; recorded in the manifest)
    "bench": "parley bench eot --stop-ms 800, 2026-12-01 19:05: 20 sentences x 5 voices, same ASR rows for both",
    "learned head 0.93": "3 % false cut-ins, 81 % of complete turns ended at the pause, mean delay 316 ms",
    "learned head 0.9": "3 %, 84 %, 298 ms (the cut 'How far is the moon' scores 0.876: too close)",
    "end-token mass 0.2 (before)": "3 %, 77 %, 340 ms",
}


@dataclass(frozen=True)
class EouTrainConfig:
    data: EouDataConfig = field(default_factory=EouDataConfig)
    l2_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # L2 on standardized weights
    max_iter: int = 500  # L-BFGS iterations
    threshold: float = THRESHOLD  # stored in the head: the cascade ends the turn at or above it
    batch_size: int = 16  # utterances per forward
    out_dir: str = str(EOU_DIR)


@dataclass
class Features:
    x: np.ndarray  # (N, D) [hidden, log end mass]
    y: np.ndarray  # (N,) 1 = the whole utterance, 0 = a cut prefix
    w: np.ndarray  # (N,) sample weights
    val: np.ndarray  # (N,) bool: validation split
    mismatched: int  # prefixes whose tokens were not a prefix of the whole's (scored on their own)


def extract(llm, data: EouData, cfg: EouTrainConfig, progress: bool = True) -> Features:  # noqa: ANN001
    """Features, labels and weights of every labeled point, one forward per utterance."""
    from tqdm import tqdm  # noqa: PLC0415

    tok = llm.tokenizer
    seqs, positions, rows = [], [], []  # rows: (y, w, val) in the order of (sequence, position)
    own_seqs, own_rows = [], []  # prefixes that tokenize differently: scored by their own forward
    for u in data.utterances:
        full = tok.encode(prompt_text(" ".join(u.words), u.context))
        val = u.split == "val"
        points = [(k, 0.0, w) for k, w in zip(u.cuts, u.neg_weights(cfg.data.neg_weight))]
        points += [(k, 1.0, cfg.data.tail_weight) for k in u.ends]  # shorter wholes (a tail left out)
        p = []
        for k, y, w in points:
            pre = tok.encode(prompt_text(" ".join(u.words[:k]), u.context))
            if full[: len(pre)] == pre:
                p.append(len(pre) - 1)
                rows.append((y, w, val))
            else:
                own_seqs.append(pre)
                own_rows.append((y, w, val))
        seqs.append(full)
        positions.append([*p, len(full) - 1])
        rows.append((1.0, 1.0, val))
    mismatched = len(own_seqs)
    seqs += own_seqs
    positions += [[len(e) - 1] for e in own_seqs]
    y, w, val = (np.array(c) for c in zip(*(rows + own_rows)))
    hs, ms = [], []
    chunk = 8 * cfg.batch_size
    bar = tqdm(total=len(seqs), desc="eou features (SmolLM2 forwards)", unit="utt", disable=not progress,
               file=sys.stderr)
    for s in range(0, len(seqs), chunk):
        h, m = features_at(llm, seqs[s : s + chunk], positions[s : s + chunk], cfg.batch_size)
        hs.append(h)
        ms.append(m)
        bar.update(len(seqs[s : s + chunk]))
    bar.close()
    x = np.concatenate([np.concatenate(hs), np.concatenate(ms)[:, None]], axis=1).astype(np.float64)
    return Features(x, y.astype(np.float64), w.astype(np.float64), val.astype(bool), mismatched)


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, max_iter: int = 500
                 ) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression on standardized x (N, D): (weight (D,), bias). Minimizes
    sum_i w_i BCE(sigmoid(x_i . v + b), y_i) / sum_i w_i + l2 / 2 |v|^2 (bias not penalized), i.e.
    scikit-learn's objective with C = 1 / l2 and the weights normalized to sum 1 (L-BFGS, float64)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    w = np.asarray(w, np.float64)
    lr = LogisticRegression(C=1.0 / l2, solver="lbfgs", max_iter=max_iter, tol=1e-10)
    lr.fit(np.asarray(x, np.float64), np.asarray(y), sample_weight=w / w.sum())
    return lr.coef_[0].copy(), float(lr.intercept_[0])


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) per feature; scale 1 where a feature is constant."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 1e-8, std, 1.0)


def weighted_log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    from sklearn.metrics import log_loss  # noqa: PLC0415

    return float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12), sample_weight=w, labels=[0, 1]))


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    return float(roc_auc_score(y, p))


def _head(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, cfg: EouTrainConfig, dim: int) -> EouHead:
    mean, scale = standardize(x)
    v, b = fit_logistic((x - mean) / scale, y, w, l2, cfg.max_iter)
    return EouHead(EouHeadConfig(hidden_dim=dim, threshold=cfg.threshold), mean, scale, v, b)


def eval_sentences(llm, head: EouHead) -> list[dict]:  # noqa: ANN001
    """Text-only scores of the evaluation set: complete and cut (first part), old and new score."""
    ids, pos = [], []
    for first, rest in SENTENCES:
        for text in (f"{first} {rest}", first):
            e = llm.tokenizer.encode(prompt_text(normalize(text)))
            ids.append(e)
            pos.append([len(e) - 1])
    h, m = features_at(llm, ids, pos)
    p = head.prob(np.concatenate([h, m[:, None]], axis=1))
    return [{"text": f"{f} {r}" if i % 2 == 0 else f, "complete": i % 2 == 0, "old": float(np.exp(m[i])),
             "new": float(p[i])} for i, (f, r) in enumerate(s for s in SENTENCES for _ in range(2))]


def train_head(cfg: EouTrainConfig, llm, progress: bool = True) -> dict:  # noqa: ANN001
    """Build the data, extract features, fit, write `cfg.out_dir`; returns the manifest."""
    import torch  # noqa: PLC0415

    t0 = time.perf_counter()
    data = build_dataset(cfg.data)
    f = extract(llm, data, cfg, progress)
    t_feat = time.perf_counter() - t0
    dim = f.x.shape[1] - 1
    tr, va = ~f.val, f.val
    sweep = []
    for l2 in cfg.l2_grid:
        head = _head(f.x[tr], f.y[tr], f.w[tr], l2, cfg, dim)
        p = head.prob(f.x[va])
        sweep.append({"l2": l2, "val_log_loss": weighted_log_loss(p, f.y[va], f.w[va]), "val_auc": auc(p, f.y[va])})
    best = min(sweep, key=lambda s: s["val_log_loss"])
    head = _head(f.x[tr], f.y[tr], f.w[tr], best["l2"], cfg, dim)
    p = head.prob(f.x[va])
    yv = f.y[va]
    val = {**best, "val_positive_recall_at_threshold": float(np.mean(p[yv == 1] >= cfg.threshold)),
           "val_negative_false_alarm_at_threshold": float(np.mean(p[yv == 0] >= cfg.threshold)),
           "old_score_val_auc": auc(np.exp(f.x[va, -1]), yv)}
    head = _head(f.x, f.y, f.w, best["l2"], cfg, dim)  # shipped: train + validation
    sentences = eval_sentences(llm, head)
    model = llm.engine.prefill_model or llm.engine.model
    manifest = {
        "what": "end-of-turn head: logistic regression on SmolLM2-135M's final hidden state at the last "
                "position + the log end-token mass, after '<|im_start|>user\\n{normalized text}'",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "data": {"description": "text only, voice/eou/data.py: distill/prompts templates (filled), follow-ups, "
                                "interruptions, back-channels, dialogue lines, voice/bench/facts.py questions, "
                                "voice/eou/phrases.py, voice/eou/grammar.py (opening x core x tail); normalized "
                                "like the transcript; positives = whole utterances, negatives = prefixes cut at word "
                                "boundaries (weights k/n, summing to neg_weight per utterance; not at punctuation, "
                                "not before an optional tail, not when itself a whole); a noisy copy (a word dropped "
                                "or added) of 30 %; an agent reply as context for half; the 20 sentences of "
                                "voice/bench/eot.py and their near-duplicates (same first part or same last three "
                                "words) excluded; validation = distill's held-out templates",
                 "config": dataclasses.asdict(cfg.data), "counts": data.counts(),
                 "rows": int(len(f.y)), "rows_train": int(tr.sum()), "rows_val": int(va.sum()),
                 "tokenization_mismatches": f.mismatched},
        "training": {"l2_grid": list(cfg.l2_grid), "l2": best["l2"], "max_iter": cfg.max_iter,
                     "standardized": True, "final_fit": "train + validation",
                     "features_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                     "end_token_ids": end_ids(llm.tokenizer), "feature_seconds": round(t_feat, 1),
                     "torch_threads": torch.get_num_threads(),
                     "machine": f"{platform.machine()}, {platform.python_version()}"},
        "eval": {"validation (held-out templates, train-only fit)": val, "l2_sweep": sweep,
                 "eval_sentences_text_only": sentences, "threshold_choice": THRESHOLD_CHOICE},
    }
    save_eou_head(head, Path(cfg.out_dir), manifest)
    return manifest
