"""Evaluation of the direct model on held-out turns, scored with Whisper (see distill/eval.py).

    parley distill eval --data DIR [--weights weights/s2s --limit 64 --device cpu]
    parley distill eval --data DIR --generate-only codes.npz    # on the GPU machine
    parley distill eval --data DIR --from-codes codes.npz       # decode + Whisper here
    parley distill eval --data DIR --teacher                    # the teacher's own codes: the ceiling
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalJob:
    """What `parley distill eval` does (built from its arguments in voice/cli/distill.py)."""

    data: tuple[Path, ...]  # token folder(s) from `parley distill tokenize`
    weights: Path | None = None  # speech-model weights (default weights/s2s)
    gguf: str | None = None  # SmolLM2 GGUF (default: the bundled file)
    codec: str | None = None  # codec weights (default weights/codec)
    asr: str = "tiny.en"  # Whisper model for scoring
    limit: int = 64  # held-out turns to evaluate
    device: str | None = None  # cpu or cuda (default: cuda when present)
    seed: int = 0
    split: str = "eval"  # eval (held-out voices and prompts) or train (fit check)
    greedy: bool = False  # greedy decoding instead of sampling
    generate_only: Path | None = None  # write generated codes here and stop
    from_codes: Path | None = None  # score codes written by generate_only
    teacher: bool = False  # score the data's own agent codes and reply tokens (what a perfect model makes)
    out: Path | None = None  # write per-turn results (JSON)


def _save_generated(path: Path, items) -> None:
    import json

    import numpy as np

    meta = [{"name": it.name, "group": it.group, "reply": it.reply, "mono": it.mono_tokens} for it in items]
    np.savez_compressed(path, meta=np.array(json.dumps(meta)),
                        **{f"codes_{i}": it.agent_codes.astype(np.int16) for i, it in enumerate(items)})


def _load_generated(path: Path):
    import json

    import numpy as np

    from distill.eval import Generated

    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return [Generated(m["name"], m["group"], m["reply"], m["mono"], z[f"codes_{i}"].astype(np.int64))
            for i, m in enumerate(meta)]


def run_evaluation(job: EvalJob) -> int:
    """Generates replies for held-out turns (or reads them), decodes them and scores them."""
    import json

    import torch

    from distill.eval import Generated, generate, score, table
    from distill.s2s_data import layout_for, load_turns
    from model.common.errors import ParleyError
    from model.speech_sampling import SpeechSamplingParams

    data = list(job.data)
    if not data and not job.from_codes:
        raise ParleyError("give --data DIR (token shards from `parley distill tokenize`), or --from-codes FILE")
    if job.from_codes and job.teacher:
        raise ParleyError("--teacher scores the data's own codes: give it without --from-codes")
    device = torch.device(job.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def data_turns():  # the teacher's turns, read with the layout of the tokens (no model needed)
        return load_turns(data, layout_for(data, 49152), split=job.split, limit=job.limit, gguf=job.gguf)

    if job.from_codes:
        items = _load_generated(job.from_codes)
    elif job.teacher:
        turns, _, desc = data_turns()
        log.info("scoring the teacher's own codes: %s", desc)
        items = [Generated(t.name, t.voice or "?", t.reply_text, list(t.reply_tokens), t.agent) for t in turns]
    else:
        from model.speech_ckpt import DEFAULT_DIR, load_speech_model

        model = load_speech_model(job.weights or DEFAULT_DIR, gguf_path=job.gguf, device=device)
        turns, silence, desc = load_turns(data, model.cfg.layout, split=job.split, limit=job.limit, gguf=job.gguf)
        log.info("evaluating on %s", desc)
        sampling = SpeechSamplingParams(0.0, 0, 0.0, 0) if job.greedy else SpeechSamplingParams()
        items = generate(model, turns, [t.voice or "?" for t in turns], silence, device=device, seed=job.seed,
                         sampling=sampling, progress=True)
        if job.generate_only:
            _save_generated(job.generate_only, items)
            log.info("wrote %d generated turns to %s", len(items), job.generate_only)
            return 0
        del model
    from codec.io import load_codec
    from model.gguf import load_tokenizer
    from model.components.asr import WhisperASR

    codec = load_codec(job.codec)
    asr = WhisperASR.load(job.asr)
    tok = load_tokenizer(job.gguf)
    teacher = None  # the teacher's codes give the ceiling column; codes scored away from their data go without
    if job.teacher:
        log.info("--teacher: the items are the teacher's codes, so no ceiling column (it would be the same row)")
    elif data:
        teacher = {t.name: t.agent for t in data_turns()[0]}
    else:
        log.info("no --data: scoring %d generated turns without the teacher's codes (no ceiling column)", len(items))
    result = score(items, codec, asr, lambda ids: tok.decode(ids), teacher, progress=True)
    print(table(result))
    for r in result["rows"][:5]:
        print(f"- reply: {r['reply']!r}\n  heard: {r['transcript']!r}\n  monologue: {r['monologue']!r}")
    if job.out:
        job.out.write_text(json.dumps(result, indent=1))
    return 0
