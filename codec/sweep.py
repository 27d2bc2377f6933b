"""`parley codec sweep`: train several codec variants side by side on one GPU, then compare.

A codec of ~15 M parameters leaves most of an H200 idle, so N variants trained as N processes
at once cost little more wall time than one: the side-by-side runs that decide each lever share
one GPU sitting. Each variant gets `out/<name>/` (ckpt.pt, log.jsonl, eval.jsonl, export/,
train.log); `summary.json` and the table compare the last quick eval of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from codec.variants import get_variant


def _last_json(path: Path) -> dict:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def summarize(out: str | Path, names: list[str] | None = None) -> list[dict]:
    """One row per variant folder: last training log line and last quick eval."""
    out = Path(out)
    names = names or sorted(p.name for p in out.iterdir() if (p / "log.jsonl").exists())
    rows = []
    for n in names:
        lg, ev = _last_json(out / n / "log.jsonl"), _last_json(out / n / "eval.jsonl")
        row = {"variant": n, "kbps": round(get_variant(n).codec.kbps, 2), "step": lg.get("step"),
               "minutes": round(lg.get("time_s", 0) / 60, 1), "mel": lg.get("mel"), "sem": lg.get("sem")}
        for part in ("real", "synthetic"):
            for k in ("mel_dist", "stoi", "whisper_cos"):
                row[f"{part}_{k}"] = ev.get(part, {}).get(k)
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("no variants yet")
        return
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")


def run_sweep(names: list[str], out: str | Path, train_cmd: list[str], train_args: list[str],
              poll_s: float = 60.0) -> int:
    """Start one training process per variant (`train_cmd --variant NAME --out DIR *train_args`,
    e.g. `python -m voice codec train`), wait for all, print the comparison."""
    for n in names:
        get_variant(n)  # unknown names fail before anything starts
    out = Path(out)
    procs = {}
    for n in names:
        d = out / n
        d.mkdir(parents=True, exist_ok=True)
        cmd = [*train_cmd, "--variant", n, "--out", str(d), *train_args]
        log = open(d / "train.log", "a")
        procs[n] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(f"started {n}: pid {procs[n].pid}", flush=True)
    t0 = time.time()
    while any(p.poll() is None for p in procs.values()):
        time.sleep(poll_s)
        print(f"[{(time.time() - t0) / 60:.1f} min]", flush=True)
        print_table(summarize(out, names))
    rows = summarize(out, names)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print_table(rows)
    failed = [n for n, p in procs.items() if p.returncode]
    if failed:
        print(f"failed: {', '.join(failed)} (see {out}/<name>/train.log)", file=sys.stderr)
    return 1 if failed else 0


def plot_sweep(out: str | Path, png: str | Path) -> None:
    """Held-out quick-eval curves of every variant (real and synthetic: STOI, whisper_cos, mel); a
    dashed line marks where a variant's discriminator started."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    names = sorted(p.name for p in out.iterdir() if (p / "eval.jsonl").exists())
    metrics = [("stoi", "STOI ↑"), ("whisper_cos", "Whisper-encoder cosine ↑"), ("mel_dist", "mel distance ↓")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharex=True)
    for n in names:
        rows = [json.loads(ln) for ln in (out / n / "eval.jsonl").read_text().splitlines() if ln.strip()]
        t = [r["time_s"] / 60 for r in rows]
        logs = out / n / "log.jsonl"
        adv = [json.loads(ln) for ln in logs.read_text().splitlines() if '"d":' in ln] if logs.exists() else []
        for i, part in enumerate(("real", "synthetic")):
            for j, (k, title) in enumerate(metrics):
                line = axes[i, j].plot(t, [r[part].get(k, float("nan")) for r in rows], marker="o", ms=3, label=n)
                if adv:  # the discriminator's start (dashed, the variant's colour)
                    axes[i, j].axvline(adv[0]["time_s"] / 60, color=line[0].get_color(), ls="--", lw=0.8)
                axes[i, j].set_title(f"{title}, held-out {part}", fontsize=9)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlabel("training minutes (wall)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
