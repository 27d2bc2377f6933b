"""`parley distill eval`: the direct model on held-out turns, scored with Whisper (see distill/eval.py).

    parley distill eval --data DIR [--weights weights/s2s --limit 64 --device cpu]
    parley distill eval --data DIR --generate-only codes.npz    # on the GPU machine
    parley distill eval --data DIR --from-codes codes.npz       # decode + Whisper here
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, nargs="+", required=True, help="token folder(s) from `parley distill tokenize`")
    p.add_argument("--weights", type=Path, default=None, help="speech-model weights (default weights/s2s)")
    p.add_argument("--gguf", default=None, help="SmolLM2 GGUF (default: the bundled file)")
    p.add_argument("--codec", default=None, help="codec weights (default weights/codec)")
    p.add_argument("--asr", default="tiny.en", help="Whisper model for scoring")
    p.add_argument("--limit", type=int, default=64, help="held-out turns to evaluate")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="eval", help="eval (held-out voices and prompts) or train (fit check)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--generate-only", type=Path, default=None, help="write generated codes here and stop")
    p.add_argument("--from-codes", type=Path, default=None, help="score codes written by --generate-only")
    p.add_argument("--out", type=Path, default=None, help="write per-turn results (JSON)")


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


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from distill.eval import generate, score, table
    from distill.s2s_data import load_turns
    from model.sampling import SpeechSamplingParams

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.from_codes:
        items = _load_generated(args.from_codes)
    else:
        from model.speech_ckpt import DEFAULT_DIR, load_speech_model

        model = load_speech_model(args.weights or DEFAULT_DIR, gguf_path=args.gguf, device=device)
        turns, silence, desc = load_turns(args.data, model.cfg.layout, split=args.split, limit=args.limit, gguf=args.gguf)
        log.info("evaluating on %s", desc)
        sampling = SpeechSamplingParams(0.0, 0, 0.0, 0) if args.greedy else SpeechSamplingParams()
        items = generate(model, turns, [t.voice or "?" for t in turns], silence, device=device, seed=args.seed,
                         sampling=sampling)
        if args.generate_only:
            _save_generated(args.generate_only, items)
            log.info("wrote %d generated turns to %s", len(items), args.generate_only)
            return 0
        del model
    from codec.io import load_codec
    from model.gguf import load_tokenizer
    from voice.components.asr import WhisperASR

    codec = load_codec(args.codec)
    asr = WhisperASR.load(args.asr)
    tok = load_tokenizer(args.gguf)
    teacher = None
    from distill.s2s_data import layout_for

    turns, _, _ = load_turns(args.data, layout_for(args.data, 49152), split=args.split, limit=args.limit, gguf=args.gguf)
    teacher = {t.name: t.agent for t in turns}
    result = score(items, codec, asr, lambda ids: tok.decode(ids), teacher)
    print(table(result))
    for r in result["rows"][:5]:
        print(f"- reply: {r['reply']!r}\n  heard: {r['transcript']!r}\n  monologue: {r['monologue']!r}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="distill.eval_cli")
    add_arguments(p)
    return run(p.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
