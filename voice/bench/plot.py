"""PNG plot of latency reports: CDFs (left) and the stacked stage breakdown per turn (right)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voice.bench.report import LatencyReport

REST = "rest (transport, playout, queues)"
AFTER_DECISION = "decision -> first audio (ASR/LLM/TTS overlap the endpoint)"


def breakdown(report: LatencyReport) -> tuple[list[int], dict[str, list[float]], list[float]]:
    """Per answered turn: stage ms (missing = 0) plus the unexplained rest, and the measured v2v.

    The rest is the client-measured voice-to-voice latency minus the sum of the server stages
    (clipped at 0): network, Opus, output queue and playout, all that the server cannot see.
    A speculative turn (a `speculative` stage) ran its model stages during the VAD endpoint, so
    they do not add up: it is drawn as vad_endpoint + the server's rest to the first audio.
    """
    names = report.stage_names()
    turns = [t for t in report.turns if t.v2v_ms is not None and not t.early]
    spec = [n for n in names if n in ("vad_endpoint", "speculative")] == ["vad_endpoint", "speculative"]
    plain = [n for n in names if n != "speculative"]
    stacks: dict[str, list[float]] = {n: [] for n in plain}
    stacks[AFTER_DECISION] = []
    stacks[REST] = []
    for t in turns:
        overlapped = spec and "speculative" in t.stages and t.server_total_ms is not None
        parts = {n: float(t.stages.get(n, 0.0)) for n in plain}
        parts[AFTER_DECISION] = 0.0
        if overlapped:
            parts = {n: (parts[n] if n == "vad_endpoint" else 0.0) for n in parts}
            parts[AFTER_DECISION] = max(0.0, t.server_total_ms - parts["vad_endpoint"])
        for n, v in parts.items():
            stacks[n].append(v)
        stacks[REST].append(max(0.0, t.v2v_ms - sum(parts.values())))
    return [t.index for t in turns], stacks, [t.v2v_ms for t in turns]


def plot_reports(reports: list[LatencyReport], path: str | Path) -> None:
    import matplotlib  # noqa: PLC0415 - heavy, only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n = len(reports)
    fig, axes = plt.subplots(1, 1 + n, figsize=(6 + 6 * n, 4.5), squeeze=False)
    ax = axes[0][0]
    for r in reports:
        for label, vals, style in (
            ("voice-to-voice", [t.v2v_ms for t in r.turns if t.v2v_ms is not None and not t.early], "-"),
            ("barge-in stop", [t.stop_ms for t in r.turns if t.stop_ms is not None and t.stopped], "--"),
        ):
            if not vals:
                continue
            v = np.sort(np.asarray(vals))
            n_v = len(v)
            y = np.arange(1, n_v + 1) / n_v
            v, y = np.concatenate([v[:1], v]), np.concatenate([[0.0], y])  # start the step at 0
            ax.step(v, y, style, where="post", label=f"{r.engine}: {label} (n={n_v})")
    ax.set_xlabel("latency at the client (ms)")
    ax.set_ylabel("fraction of turns")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("latency CDF")

    for i, r in enumerate(reports):
        ax = axes[0][1 + i]
        idx, stacks, v2v = breakdown(r)
        x = np.arange(len(idx))
        bottom = np.zeros(len(idx))
        for name, vals in stacks.items():
            if not any(vals):
                continue
            ax.bar(x, vals, bottom=bottom, label=name, width=0.8)
            bottom += np.asarray(vals)
        ax.plot(x, v2v, "k.", label="measured voice-to-voice")
        top = max([*v2v, *bottom.tolist(), 1.0])
        ax.set_ylim(0, top * 1.45)  # room for the legend above the bars
        ax.set_xticks(x, [str(j) for j in idx], fontsize=7)
        ax.set_xlabel("turn")
        ax.set_ylabel("ms")
        ax.set_title(f"{r.engine}: stage breakdown per turn")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
