"""The learned end-of-turn head: logistic regression on SmolLM2's last hidden state + end-token mass.

    scorer = load_eou_scorer()             # the shipped head (weights/eou/), or the old score if absent
    p = scorer.score(llm, "can you tell me a short story about a cat", context=last_agent_reply)
    p >= scorer.threshold                  # the turn ends at the short pause

Features (`model/components/eou.py`, one forward, the one the old score pays): x = [h (576), log m]
with h the final hidden state at the last position and m the end-token mass. The head:
    p = sigmoid(w . (x - mean) / scale + b)                   # (D,) -> scalar, D = 577
Weights: `weights/eou/model-00001-of-00001.safetensors` (mean, scale, weight, bias; the config
`EouHeadConfig` as JSON in the metadata key "config") + `manifest.json` (sha256, data, training, eval); written
by `parley eou train` (voice/eou/). A missing file falls back to `LogMassScorer` (logged once); a
damaged one is a `ParleyError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from model.common.checkpoint import file_sha256, write_shards
from model.common.errors import ParleyError
from model.common.paths import WEIGHTS_DIR
from model.components.eou import CONTEXT_WORDS, end_features, end_of_turn_prob

log = logging.getLogger(__name__)

EOU_DIR = WEIGHTS_DIR / "eou"
FORMAT = "parley-eou-head-v1"
TENSORS = ("mean", "scale", "weight", "bias")
OLD_THRESHOLD = 0.2  # the end-token mass alone: 2 % false cut-ins (parley bench eot, 2026-12-01)


@dataclass(frozen=True)
class EouHeadConfig:
    hidden_dim: int = 576  # SmolLM2-135M's final hidden state (+1 feature: the log end-token mass)
    threshold: float = 0.5  # a score at or above ends the turn at the pause (chosen by parley bench eot)
    context_words: int = CONTEXT_WORDS  # of the agent's last reply, prepended as its turn
    llm: str = "smollm2"  # the model whose hidden states the head reads
    format: str = FORMAT

    @property
    def dim(self) -> int:
        return self.hidden_dim + 1


class EouScorer(Protocol):
    name: str
    threshold: float

    def score(self, llm, text: str, context: str | None = None) -> float: ...  # noqa: ANN001


@dataclass(frozen=True)
class LogMassScorer:
    """The old score: the end-token mass itself (`eou.end_of_turn_prob`)."""

    name: str = "end-token mass"
    threshold: float = OLD_THRESHOLD

    def score(self, llm, text: str, context: str | None = None) -> float:  # noqa: ANN001
        return end_of_turn_prob(llm, text, context)


@dataclass(frozen=True)
class EouHead:
    cfg: EouHeadConfig
    mean: np.ndarray  # (D,) feature standardization
    scale: np.ndarray  # (D,)
    weight: np.ndarray  # (D,) on standardized features
    bias: float
    name: str = "learned head"

    @property
    def threshold(self) -> float:
        return self.cfg.threshold

    def prob(self, x: np.ndarray) -> np.ndarray:
        """Features (N, D) -> P(turn ends) (N,)."""
        z = ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, llm, text: str, context: str | None = None) -> float:  # noqa: ANN001
        f = end_features(llm, text, context)
        if f is None:
            return 0.0
        return float(self.prob(np.append(f[0], f[1])[None])[0])

    def with_threshold(self, threshold: float) -> "EouHead":
        return dataclasses.replace(self, cfg=dataclasses.replace(self.cfg, threshold=threshold))


def save_eou_head(head: EouHead, out_dir: str | Path = EOU_DIR, manifest: dict | None = None) -> Path:
    """Write the head (one safetensors file, config in its metadata) + manifest.json; returns the file."""
    import torch  # noqa: PLC0415

    cfg = dataclasses.asdict(head.cfg)
    sd = {"mean": head.mean, "scale": head.scale, "weight": head.weight, "bias": np.array([head.bias])}
    sd = {k: torch.from_numpy(np.asarray(v, np.float32).copy()) for k, v in sd.items()}
    man = {**(manifest or {}), "format": FORMAT, "config": cfg}
    # one metadata key: safetensors writes several in a random order (the file would change each run)
    return write_shards(sd, out_dir, {"config": json.dumps(cfg, sort_keys=True)}, man)[0]


def head_file(folder: str | Path = EOU_DIR) -> Path | None:
    """The head's safetensors file in `folder`, None if there is none."""
    files = sorted(Path(folder).glob("model-*.safetensors")) if Path(folder).is_dir() else []
    return files[0] if files else None


def load_eou_head(folder: str | Path = EOU_DIR) -> EouHead:
    """Load and check the head; ParleyError (one line) if it is missing, damaged or foreign."""
    from safetensors import safe_open  # noqa: PLC0415

    f = head_file(folder)
    if f is None:
        raise ParleyError(f"no end-of-turn head in {folder} (expected model-*.safetensors; `parley eou train`)")
    man_path = Path(folder) / "manifest.json"
    try:
        want = json.loads(man_path.read_text())["files"][f.name]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ParleyError(f"{man_path}: missing or unreadable ({type(e).__name__}); "
                          "`parley eou train` rewrites it") from None
    if file_sha256(f) != want:
        raise ParleyError(f"{f}: corrupt (sha256 does not match manifest.json); `parley eou train` rewrites it")
    try:
        with safe_open(str(f), "np") as h:
            cfg_dict = json.loads((h.metadata() or {})["config"])
            if cfg_dict.get("format") != FORMAT:
                raise ParleyError(f"{f}: not an end-of-turn head (format {cfg_dict.get('format')!r}, want {FORMAT})")
            cfg = EouHeadConfig(**cfg_dict)
            t = {k: h.get_tensor(k).astype(np.float64) for k in TENSORS}
    except ParleyError:
        raise
    except Exception as e:  # safetensors / json / dataclass errors for damaged files
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ParleyError(f"{f}: corrupt end-of-turn head ({why})") from None
    shapes = {k: v.shape for k, v in t.items()}
    if any(shapes[k] != (cfg.dim,) for k in ("mean", "scale", "weight")) or shapes["bias"] != (1,):
        raise ParleyError(f"{f}: tensor shapes {shapes} do not match the config (dim {cfg.dim})")
    return EouHead(cfg, t["mean"], t["scale"], t["weight"], float(t["bias"][0]))


_warned: set[str] = set()


def load_eou_scorer(folder: str | Path = EOU_DIR) -> EouHead | LogMassScorer:
    """The learned head; the old score only when there is no head file (logged once per folder)."""
    if head_file(folder) is None:
        if str(folder) not in _warned:
            _warned.add(str(folder))
            log.warning("no end-of-turn head in %s: using the end-token mass (threshold %g); "
                        "`parley eou train` writes one", folder, OLD_THRESHOLD)
        return LogMassScorer()
    return load_eou_head(folder)
