"""`parley codec eval`: reconstruction quality on the held-out set.

Per source and overall: mel distance (mean |log10 mel| difference, 80 mels, n_fft 1024), STOI,
wideband PESQ, and intelligibility with Whisper tiny.en: WER of the original and of the
reconstruction against the text (synthetic voices; asterisk-en's prompt texts from
`asterisk-core-sounds-en`), and WER of the reconstruction against Whisper's transcript of the
original (all sources).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

from codec.data import asterisk_en_text
from model.common.errors import ParleyError


def _norm_text(s: str) -> str:
    s = re.sub(r"[^a-z0-9' ]+", " ", s.lower())
    return re.sub(r"\s+", " ", s).strip()


def _wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(_norm_text(r), _norm_text(h)) for r, h in zip(refs, hyps) if _norm_text(r)]
    if not pairs:
        return float("nan")
    return float(jiwer.wer([p[0] for p in pairs], [p[1] or "<empty>" for p in pairs]))


def load_eval_rows(data: str | Path, limit: int = 0) -> list[dict]:
    """Rows of `prepare-data`'s eval.jsonl with the audio under 'x' (float32, 16 kHz); at most
    `limit` per source (0: all)."""
    import soundfile as sf

    data = Path(data)
    path = data / "eval.jsonl"
    if not path.exists():
        raise ParleyError(f"{path} not found: run `parley codec prepare-data` first")
    rows, per = [], {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if limit and per.get(r["source"], 0) >= limit:
            continue
        per[r["source"]] = per.get(r["source"], 0) + 1
        x, sr = sf.read(data / r["file"], dtype="float32")
        r["x"] = x
        if r["source"] == "asterisk-en" and not r.get("text"):  # sets made before the texts were read
            r["text"] = asterisk_en_text(r["id"])
        rows.append(r)
    return rows


def run_eval(weights: str | None, data: str, limit: int = 0, n_qs: list[int] | None = None,
             asr: Callable[[list[np.ndarray]], list[str]] | None = None, json_out: str | None = None,
             demos: str | None = None) -> dict:
    """Scores the codec on the held-out set; `asr` (batch of 16 kHz audio -> texts) adds WER."""
    import torch
    from pesq import pesq
    from pystoi import stoi

    from codec.io import load_codec
    from codec.losses import mel_distance

    torch.set_num_threads(1)  # steadier than 2 threads on the shared 2-core machine
    model = load_codec(weights)
    sr = model.sample_rate
    rows = load_eval_rows(data, limit)
    n_qs = n_qs or [model.cfg.n_q]
    t0 = time.time()
    recon: dict[int, list[np.ndarray]] = {}
    for nq in n_qs:
        outs = []
        with torch.no_grad():
            for r in rows:
                x = torch.from_numpy(r["x"])[None]
                outs.append(model.decode(model.encode(x, n_q=nq))[0, 0, : x.shape[-1]].numpy())
        recon[nq] = outs
    sources = sorted({r["source"] for r in rows})
    results: dict = {"config": model.cfg.to_dict(), "kbps": {nq: nq * np.log2(model.cfg.bins) * model.frame_rate / 1000
                                                             for nq in n_qs}, "rows": []}
    hyp_orig: list[str] = []
    hyp_rec: list[str] = []
    if asr:
        hyp_orig = asr([r["x"] for r in rows])
        hyp_rec = asr(recon[max(n_qs)])
    for nq in n_qs:
        for src in [*sources, "all"]:
            idx = [i for i, r in enumerate(rows) if src in ("all", r["source"])]
            mel = np.mean([mel_distance(torch.from_numpy(rows[i]["x"])[None],
                                        torch.from_numpy(recon[nq][i])[None], sr) for i in idx])
            st = np.mean([stoi(rows[i]["x"], recon[nq][i], sr, extended=False) for i in idx])
            pq = []
            for i in idx:
                try:
                    pq.append(pesq(sr, rows[i]["x"], recon[nq][i], "wb"))
                except Exception:  # pesq raises on utterances without detectable speech
                    pass
            row = {"n_q": nq, "kbps": round(results["kbps"][nq], 3), "source": src, "n": len(idx),
                   "mel_dist": round(float(mel), 4), "stoi": round(float(st), 4),
                   "pesq_wb": round(float(np.mean(pq)), 3) if pq else float("nan")}
            if asr and nq == max(n_qs):
                texted = [i for i in idx if rows[i]["text"]]
                row["wer_orig"] = round(_wer([rows[i]["text"] for i in texted], [hyp_orig[i] for i in texted]), 4)
                row["wer_recon"] = round(_wer([rows[i]["text"] for i in texted], [hyp_rec[i] for i in texted]), 4)
                row["wer_recon_vs_orig_asr"] = round(_wer([hyp_orig[i] for i in idx], [hyp_rec[i] for i in idx]), 4)
            results["rows"].append(row)
    results["seconds"] = round(time.time() - t0, 1)
    _print_table(model, results)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1))
    if demos:
        _write_demos(Path(demos), rows, recon[max(n_qs)], sr, hyp_orig, hyp_rec, results["kbps"][max(n_qs)])
    return results


def _print_table(model, results: dict) -> None:  # type: ignore[no-untyped-def]
    c = model.cfg
    print(f"codec: {c.sample_rate} Hz, {c.frame_rate:g} Hz frames, {c.n_q} x {c.bins} codebooks, "
          f"{c.kbps:.2f} kbps at all codebooks")
    cols = ["n_q", "kbps", "source", "n", "mel_dist", "stoi", "pesq_wb", "wer_orig", "wer_recon",
            "wer_recon_vs_orig_asr"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results["rows"]:
        print("| " + " | ".join(str(r.get(k, "")) for k in cols) + " |")


def _write_demos(out: Path, rows: list[dict], recon: list[np.ndarray], sr: int, hyp_orig: list[str],
                 hyp_rec: list[str], kbps: float) -> None:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    picked, seen = [], set()
    for i, r in enumerate(rows):
        if r["source"] not in seen and 2.0 < len(r["x"]) / sr < 6.0:
            seen.add(r["source"])
            picked.append(i)
    lines = [f"# Parley codec reconstructions (held-out voices, {kbps:.1f} kbps)", ""]
    for i in picked:
        name = re.sub(r"[^A-Za-z0-9]+", "_", rows[i]["source"]).strip("_")
        sf.write(out / f"{name}_original.wav", rows[i]["x"], sr, subtype="PCM_16")
        sf.write(out / f"{name}_codec.wav", recon[i], sr, subtype="PCM_16")
        lines.append(f"- `{name}_original.wav` / `{name}_codec.wav` ({rows[i]['source']}, {rows[i]['id']})")
        if hyp_orig:
            lines.append(f"  - Whisper on original: \"{hyp_orig[i]}\"; on codec: \"{hyp_rec[i]}\"")
    (out / "README.md").write_text("\n".join(lines) + "\n")
