"""End-of-turn evaluation (`parley bench eot`): short VAD pause + semantic score vs a long timeout.

Labeled set: SENTENCES spoken by several voices, each (a) complete and (b) cut at a mid-sentence
point where the user pauses 300-700 ms before going on. At a pause of `pause_ms` the detector
transcribes what was said so far and scores it (`model.components.eou`); at or above the
threshold the turn ends there, otherwise at the `stop_ms` fallback.
Each paused utterance gets a pause length drawn uniformly in 300-700 ms (seeded).
False cut-in: the turn ends inside the pause: the score (known pause_ms + ASR + score after the
pause began) is at or above the threshold before the user goes on, or the pause reaches stop_ms.
End-of-turn delay (complete utterances): pause_ms + ASR + score when it ends early, else stop_ms
(both plus Silero's ~60 ms lag, left out here as it is the same for every rule). With `early_asr`
(the server's default: the speculative reply, ASR first, starts at the first silent chunk, and the
turn may end once the pause reaches pause_ms) the turn ends at max(pause_ms, ASR + score) instead.
Baseline: the VAD alone with a timeout T (cut-in when the pause >= T, delay T), for several T.
Scorers on the same rows (same ASR transcripts, one forward each, `model.components.eou`):
"p" the end-token mass alone (the old score), "p_head" the learned head (weights/eou/); a
report of `--rows-from` without "p_head" gets it from the stored transcripts. From the audio:
"p_audio" Smart Turn (`model.components.smart_turn`, known after its own `audio_ms`, no ASR) and
"p_both" the head's score where Smart Turn says >= 0.5, else 0 (known when both are, run side by side).
The paused utterances are the first part spoken alone by a TTS voice, which ends it as a sentence
(falling pitch, final lengthening): what an audio model reads as the end of a turn. A person who
pauses mid-sentence sounds unfinished, so "p_audio"'s false cut-ins here are an upper bound.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from voice.bench.facts import USER_VOICES

# (first part, rest): the user pauses after the first part
SENTENCES: tuple[tuple[str, str], ...] = (
    ("What is the capital of", "France?"),
    ("How many legs does", "a spider have?"),
    ("Can you tell me", "a short joke?"),
    ("I would like to know", "the time in Tokyo."),
    ("What is the weather", "like tomorrow?"),
    ("Who wrote the play", "Romeo and Juliet?"),
    ("Please remind me to", "call my mother."),
    ("What do you think about", "electric cars?"),
    ("How far is the moon", "from the earth?"),
    ("Could you explain how", "a rainbow forms?"),
    ("My favorite color is", "green, what is yours?"),
    ("What is the difference between", "a frog and a toad?"),
    ("I need a recipe for", "chocolate cake."),
    ("Tell me something about", "the ocean."),
    ("What is the largest", "animal in the world?"),
    ("Why is the sky", "blue?"),
    ("How do I say hello in", "Spanish?"),
    ("Which planet is closest to", "the sun?"),
    ("Can you help me with", "my homework?"),
    ("What time does the", "store open?"),
)


@dataclass(frozen=True)
class EotConfig:
    voices: tuple[str, ...] = USER_VOICES
    pause_ms: float = 200.0  # short VAD silence before the semantic check
    stop_ms: float = 544.0  # fallback: the plain VAD timeout
    thresholds: tuple[float, ...] = (0.001, 0.003, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7)
    head_thresholds: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
    audio_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
    head_dir: str | None = None  # the learned head (default: weights/eou/)
    vad_timeouts: tuple[float, ...] = (300.0, 400.0, 544.0, 640.0, 720.0, 800.0, 1000.0)
    pause_range_ms: tuple[float, float] = (300.0, 700.0)
    seed: int = 0
    early_asr: bool = True  # ASR from the silence onset, end at max(pause, ASR + score) (as the server)
    out_json: str | None = None
    out_png: str | None = None


def score_set(cfg: EotConfig) -> list[dict]:
    """Every sentence x voice: {'voice','text','heard','complete','p','p_head','p_audio','asr_ms','eou_ms',
    'audio_ms'} (two rows each). One forward per transcript gives both text scores; eou_ms is that forward +
    the head; audio_ms is Smart Turn's features + forward."""
    import torch  # noqa: PLC0415

    from model.audio import resample  # noqa: PLC0415
    from model.common.audio_constants import SPEECH_SR  # noqa: PLC0415
    from model.components.asr_ct2 import load_asr  # noqa: PLC0415
    from model.components.eou import end_features  # noqa: PLC0415
    from model.components.llm import load_llm  # noqa: PLC0415
    from model.components.smart_turn import SmartTurn  # noqa: PLC0415
    from model.components.tts import load_voice  # noqa: PLC0415

    torch.set_num_threads(1)
    asr, llm, head, smart = load_asr(), load_llm(), _head(cfg), SmartTurn.load()
    rows = []
    for name in cfg.voices:
        v = load_voice(name)
        for first, rest in SENTENCES:
            for complete, text in ((True, f"{first} {rest}"), (False, first)):
                audio = resample(v.synthesize(text), v.sample_rate, SPEECH_SR)
                t0 = time.perf_counter()
                heard = asr.transcribe(audio)
                t1 = time.perf_counter()
                f = end_features(llm, heard)
                p, p_head = (0.0, 0.0) if f is None else (float(np.exp(f[1])), float(head.prob(np.append(*f)[None])[0]))
                t2 = time.perf_counter()
                p_audio = smart.prob(audio)
                rows.append({"voice": name, "text": text, "heard": heard, "complete": complete, "p": p,
                             "p_head": p_head, "p_audio": p_audio, "asr_ms": 1000 * (t1 - t0),
                             "eou_ms": 1000 * (t2 - t1), "audio_ms": 1000 * (time.perf_counter() - t2)})
    return rows


def _head(cfg: EotConfig):  # noqa: ANN202 - EouHead
    from model.components.eou_head import EOU_DIR, load_eou_head  # noqa: PLC0415

    return load_eou_head(cfg.head_dir or EOU_DIR)


def add_head_scores(rows: list[dict], cfg: EotConfig) -> list[dict]:
    """Rows of an older report (no "p_head"): the head's score of each stored transcript."""
    from model.components.llm import load_llm  # noqa: PLC0415

    if all("p_head" in r for r in rows):
        return rows
    llm, head = load_llm(), _head(cfg)
    return [{**r, "p_head": head.score(llm, r["heard"])} for r in rows]


def _known_ms(r: dict, key: str) -> float:
    """When score `key` of row r is known after the silence onset (ASR + head, Smart Turn, or both)."""
    text = r["asr_ms"] + r["eou_ms"]
    return {"p_audio": r.get("audio_ms", 0.0), "p_both": max(text, r.get("audio_ms", 0.0))}.get(key, text)


def _with_both(rows: list[dict]) -> list[dict]:
    from model.components.smart_turn import THRESHOLD  # noqa: PLC0415

    return [{**r, "p_both": r["p_head"] if r["p_audio"] >= THRESHOLD else 0.0} if "p_audio" in r else r for r in rows]


def tradeoff(rows: list[dict], cfg: EotConfig, key: str = "p",
             thresholds: tuple[float, ...] | None = None) -> tuple[list[dict], list[dict]]:
    """(rule on score `key` per threshold, VAD timeout per T): false cut-ins, delays."""
    comp = [r for r in rows if r["complete"]]
    cut = [r for r in rows if not r["complete"]]
    rng = np.random.default_rng(cfg.seed)
    pauses = rng.uniform(*cfg.pause_range_ms, size=len(cut))
    out = []
    for thr in cfg.thresholds if thresholds is None else thresholds:
        def early(r: dict) -> float:
            if r[key] < thr:
                return float("inf")
            known = _known_ms(r, key)
            return max(cfg.pause_ms, known) if cfg.early_asr else cfg.pause_ms + known

        delays = [min(early(r), cfg.stop_ms) for r in comp]
        cuts = [min(early(r), cfg.stop_ms) <= pause for r, pause in zip(cut, pauses)]
        out.append({"threshold": thr, "false_cut_in": float(np.mean(cuts)),
                    "early_fraction": float(np.mean([early(r) < cfg.stop_ms for r in comp])),
                    "mean_delay_ms": float(np.mean(delays)), "p50_delay_ms": float(np.median(delays))})
    vad = [{"timeout_ms": t, "false_cut_in": float(np.mean(pauses >= t)), "mean_delay_ms": t}
           for t in cfg.vad_timeouts]
    return out, vad


SCORERS = (("p", "end-token mass (old)"), ("p_head", "learned head (weights/eou)"),
           ("p_audio", "Smart Turn (audio)"), ("p_both", "Smart Turn >= 0.5 and the head"))


def plot(curves: dict[str, list[dict]], vad: list[dict], cfg: EotConfig, path: str) -> None:
    """Mean delay vs false cut-ins: one line per scorer (labels = threshold), the VAD timeout in gray."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (key, name), marker in zip(SCORERS, ("o-", "^-", "v-", "d-")):
        curve = curves.get(key)
        if not curve:
            continue
        xs = [100 * c["false_cut_in"] for c in curve]
        ys = [c["mean_delay_ms"] for c in curve]
        line, = ax.plot(xs, ys, marker, label=f"{cfg.pause_ms:.0f} ms pause + {name}, fallback {cfg.stop_ms:.0f} ms")
        for c, x, y in zip(curve, xs, ys):
            ax.annotate(f"{c['threshold']:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points",
                        color=line.get_color())
    ax.plot([100 * v["false_cut_in"] for v in vad], [v["mean_delay_ms"] for v in vad], "s--", color="gray",
            label="VAD timeout only (labels = timeout)")
    for v in vad:
        ax.annotate(f"{v['timeout_ms']:.0f}", (100 * v["false_cut_in"], v["mean_delay_ms"]), fontsize=7,
                    xytext=(3, -8), textcoords="offset points", color="gray")
    ax.axvline(5, color="red", ls=":", label="5 % false cut-ins")
    ax.set_xlabel("false cut-ins (% of utterances with a 300-700 ms mid-sentence pause)")
    ax.set_ylabel("mean end-of-turn delay, complete utterances (ms)")
    ax.set_title("End of turn: threshold trade-off, the same rows for every score (labels = threshold)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def run_eot(cfg: EotConfig, rows: list[dict] | None = None) -> dict:
    """Scores the set (or takes `rows` of an earlier report), then the trade-off of each scorer."""
    load_start = _load()
    rows = _with_both(score_set(cfg) if rows is None else add_head_scores(rows, cfg))
    curves, vad = {}, []
    for key, _ in SCORERS:
        if all(key in r for r in rows):  # reports from before Smart Turn have no audio scores
            thr = {"p": cfg.thresholds, "p_audio": cfg.audio_thresholds}.get(key, cfg.head_thresholds)
            curves[key], vad = tradeoff(rows, cfg, key, thr)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_1_5_15": [load_start, _load()],
              "pause_ms": cfg.pause_ms, "stop_ms": cfg.stop_ms, "early_asr": cfg.early_asr, "voices": list(cfg.voices),
              "n_complete": sum(r["complete"] for r in rows), "n_paused": sum(not r["complete"] for r in rows),
              "asr_ms_mean": float(np.mean([r["asr_ms"] for r in rows])),
              "eou_ms_mean": float(np.mean([r["eou_ms"] for r in rows])),
              "audio_ms_mean": float(np.mean([r.get("audio_ms", np.nan) for r in rows])), "curves": curves, "vad_only": vad,
              "rows": rows}
    if cfg.out_json:
        with open(cfg.out_json, "w") as f:
            json.dump(report, f, indent=1)
    if cfg.out_png:
        plot(curves, vad, cfg, cfg.out_png)
    return report


def format_report(report: dict) -> str:
    """The report as the table `parley bench eot` prints."""
    lines = [f"{report['n_complete']} complete, {report['n_paused']} paused utterances; "
             f"ASR {report['asr_ms_mean']:.0f} ms, score {report['eou_ms_mean']:.0f} ms, Smart Turn "
             f"{report.get('audio_ms_mean', float('nan')):.0f} ms (means); "
             f"load {report['load_1_5_15'][0]} -> {report['load_1_5_15'][1]}",
             f"{'score':30s} {'threshold':>9s} {'false cut-ins':>13s} {'ended at pause':>14s} {'mean delay':>10s} "
             f"{'p50 delay':>9s}"]
    for key, name in SCORERS:
        for c in report["curves"].get(key, []):
            lines.append(f"{name:30s} {c['threshold']:9g} {100 * c['false_cut_in']:11.1f} % "
                         f"{100 * c['early_fraction']:12.1f} % {c['mean_delay_ms']:7.0f} ms {c['p50_delay_ms']:6.0f} ms")
    lines += [f"VAD timeout {v['timeout_ms']:<6.0f} false cut-ins {100 * v['false_cut_in']:5.1f} %"
              for v in report["vad_only"]]
    return "\n".join(lines)
