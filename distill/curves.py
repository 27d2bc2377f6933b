"""Training curves of direct-model runs side by side (`parley distill curves RUN_DIR... --out PNG`).

Each run directory holds the ``history.jsonl`` that `distill.train.train` writes: training rows (loss,
audio, text, acc_cb0, ... at ``step`` / ``min``) and evaluation rows (``val_*``). Runs of one GPU
session (the LoRA run and its side arms) share the wall clock, so minutes are on the x axis.
"""

from __future__ import annotations

import json
from pathlib import Path

# (title, training key, validation key); a missing key leaves its line out
PANELS = (
    ("loss (train solid, val dashed)", "loss", "val_loss"),
    ("agent speech CE", "speech_ce", "val_speech_ce"),
    ("codebook-0 accuracy", "acc_cb0", "val_acc_cb0"),
    ("monologue word accuracy", "text_word_acc", "val_text_word_acc"),
)


def read_history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """-> (training rows, validation rows) of a run's history.jsonl."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        from model.common.errors import ParleyError

        raise ParleyError(f"{run_dir}: no history.jsonl (a `parley distill train --run-dir` folder?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


def _minutes(rows: list[dict], train: list[dict]) -> list[float]:
    """Validation rows carry no wall time: take it from the training row of the nearest step."""
    by_step = {r["step"]: r.get("min", float("nan")) for r in train}
    steps = sorted(by_step)
    return [by_step[min(steps, key=lambda s: abs(s - r["step"]))] if steps else float("nan") for r in rows]


def plot_runs(runs: list[tuple[str, Path]], out_png: Path, title: str = "") -> Path:
    """One 2x2 figure: each panel a metric, each run a colour (train solid, validation dashed)."""
    import matplotlib  # noqa: PLC0415 - heavy, only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for i, (label, run_dir) in enumerate(runs):
        train, val = read_history(run_dir)
        colour = f"C{i}"
        for ax, (name, tk, vk) in zip(axes.flat, PANELS):
            if train and tk in train[0]:
                ax.plot([r.get("min", float("nan")) for r in train], [r[tk] for r in train], color=colour,
                        label=f"{label} train", lw=1)
            if val and vk in val[0]:
                ax.plot(_minutes(val, train), [r[vk] for r in val], color=colour, ls="--", marker=".",
                        label=f"{label} val", lw=1.5)
            ax.set_title(name, fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("training minutes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
