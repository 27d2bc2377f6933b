"""`parley codec sweep`: train several codec variants side by side on one GPU, then compare.

A codec of ~15 M parameters leaves most of an H200 idle, so N variants trained as N processes
at once cost little more wall time than one: the side-by-side runs that decide each lever share
one GPU sitting. Each arm gets `out/<label>/` (ckpt.pt, log.jsonl, eval.jsonl, export/,
train.log, arm.json); `summary.json` and the table compare the last quick eval of each.

An arm is `VARIANT[@LABEL][:ARGS]`: a variant of codec/variants.py, its folder name (default the
variant) and `train` arguments for this arm only, after the common ones (so they win):
`25hz-sem-bypass` and `25hz-sem-bypass@seg6:--segment-s 6.4 --batch-size 16` run side by side.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from codec.variants import get_variant


@dataclass(frozen=True)
class Arm:
    label: str  # folder name under the sweep's out/
    variant: str
    args: tuple[str, ...] = ()  # `train` arguments for this arm only


def parse_arm(spec: str) -> Arm:
    """`VARIANT[@LABEL][:ARGS]` -> Arm; an unknown variant or a bad label fails here."""
    head, _, args = spec.partition(":")
    variant, _, label = head.partition("@")
    get_variant(variant.strip())
    label = (label or variant).strip()
    if not label or "/" in label or label.startswith("."):
        raise ValueError(f"bad arm label in {spec!r}")
    return Arm(label, variant.strip(), tuple(shlex.split(args)))


def _arm_variant(d: Path) -> str:
    meta = d / "arm.json"
    return json.loads(meta.read_text())["variant"] if meta.exists() else d.name


def _last_json(path: Path) -> dict:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def summarize(out: str | Path, names: list[str] | None = None) -> list[dict]:
    """One row per arm folder: last training log line and last quick eval."""
    out = Path(out)
    names = names or sorted(p.name for p in out.iterdir() if (p / "log.jsonl").exists())
    rows = []
    for n in names:
        lg, ev = _last_json(out / n / "log.jsonl"), _last_json(out / n / "eval.jsonl")
        row = {"variant": n, "kbps": round(get_variant(_arm_variant(out / n)).codec.kbps, 2), "step": lg.get("step"),
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


def run_sweep(specs: list[str], out: str | Path, train_cmd: list[str], train_args: list[str],
              poll_s: float = 60.0) -> int:
    """Start one training process per arm (`train_cmd --variant V --out DIR *train_args *arm.args`,
    e.g. `python -m voice codec train`), wait for all, print the comparison."""
    arms = [parse_arm(s) for s in specs]  # unknown variants fail before anything starts
    names = [a.label for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"two arms share a folder: {names} (give one a @LABEL)")
    out = Path(out)
    procs = {}
    for a in arms:
        d = out / a.label
        d.mkdir(parents=True, exist_ok=True)
        (d / "arm.json").write_text(json.dumps({"variant": a.variant, "args": [*train_args, *a.args]}) + "\n")
        cmd = [*train_cmd, "--variant", a.variant, "--out", str(d), *train_args, *a.args]
        log = open(d / "train.log", "a")
        procs[a.label] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(f"started {a.label}: pid {procs[a.label].pid}", flush=True)
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
