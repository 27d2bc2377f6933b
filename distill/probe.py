"""Does the speech model's audio follow its text stream? A teacher-forced probe on held-out turns.

Speak examples of held-out turns go through the model three ways:
- **own**: with their own monologue (what training sees);
- **other**: with another turn's monologue on the same frames (words change, timing stays);
- **none**: with no words (PAD only).
The agent's speech cross-entropy (nats per codebook over its speaking frames) and codebook-0 accuracy
of each are compared: when ``other`` and ``none`` cost little more than ``own``, the model speaks
from its audio history alone (fluent babble that cannot say what its text says: run 2, RUNS.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

CONDITIONS = ("own", "other", "none")


@dataclass(frozen=True)
class ProbeRow:
    condition: str
    speech_ce: float  # nats per codebook, agent speaking frames
    acc_cb0: float
    frames: int


def _with_text(ex: dict[str, np.ndarray], donor: dict[str, np.ndarray] | None, pad: int) -> dict[str, np.ndarray]:
    """``ex`` with the monologue of ``donor`` cropped / PAD-padded to its length (None: no words)."""
    T = ex["text_tgt"].shape[0]
    tgt = np.full(T, pad, dtype=np.int64)
    if donor is not None:
        n = min(T, donor["text_tgt"].shape[0])
        tgt[:n] = donor["text_tgt"][:n]
    text_in = ex["text_in"].copy()  # BOS at 0, then the targets shifted by one (build_inputs)
    text_in[1:] = tgt[:-1]
    return {**ex, "text_in": text_in, "text_tgt": tgt}


def text_reliance(model, turns, silence: np.ndarray, batch: int = 8, max_frames: int = 256, seed: int = 0,
                  progress: bool = False) -> list[ProbeRow]:
    """-> one row per condition (see the module docstring) over the Speak examples of ``turns``."""
    import torch
    from tqdm import tqdm

    from distill.curriculum import CurriculumConfig, Stage, speak_example, stage_items
    from distill.train import LossConfig, collate, compute_loss

    layout = model.cfg.layout
    rng = random.Random(seed)
    cc = CurriculumConfig(stage=Stage.SPEAK)
    exs = [speak_example(t, silence, layout, cc, rng, max_frames) for t in stage_items(turns, Stage.SPEAK)]
    if len(exs) < 2:
        raise ValueError(f"the probe needs at least 2 turns the agent speaks in, got {len(exs)}")
    variants = {
        "own": exs,
        "other": [_with_text(e, exs[(i + 1) % len(exs)], layout.text_pad) for i, e in enumerate(exs)],
        "none": [_with_text(e, None, layout.text_pad) for e in exs],
    }
    device = next(model.parameters()).device
    lc = LossConfig()
    rows = []
    model.eval()
    bar = tqdm(total=len(CONDITIONS) * len(exs), desc="probe", unit="turn", disable=not progress, dynamic_ncols=True)
    for cond in CONDITIONS:
        ce = acc = n = 0.0
        for b0 in range(0, len(exs), batch):
            chunk = variants[cond][b0 : b0 + batch]
            x = {k: v.to(device) for k, v in collate(chunk, layout).items()}
            frames = float((x["agent_speaking"] & x["valid"]).sum())
            with torch.no_grad():
                _, m = compute_loss(model, x, lc, layout)
            ce, acc, n = ce + m["speech_ce"] * frames, acc + m["acc_cb0"] * frames, n + frames
            bar.update(len(chunk))
        rows.append(ProbeRow(cond, ce / max(n, 1), acc / max(n, 1), int(n)))
    bar.close()
    return rows


def probe_table(rows: list[ProbeRow]) -> str:
    """Markdown: each condition, and its speech CE above ``own`` (what the words are worth)."""
    own = next(r.speech_ce for r in rows if r.condition == "own")
    out = ["| monologue | speech CE (nats / codebook) | above own | codebook-0 accuracy | frames |",
           "|---|---|---|---|---|"]
    out += [f"| {r.condition} | {r.speech_ce:.3f} | {r.speech_ce - own:+.3f} | {r.acc_cb0:.1%} | {r.frames} |"
            for r in rows]
    return "\n".join(out)
