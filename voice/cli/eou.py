"""`parley eou train | score`: the cascade's learned end-of-turn head (voice/eou/, model/components/eou_head.py).

    parley eou train                       # regenerate weights/eou/ (deterministic; ~5-10 min on 2 cores)
    parley eou score "can you tell me"     # old and new score of typed text
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eou", help="end-of-turn head of the cascade: train (weights/eou/), score text")
    eou_sub = p.add_subparsers(dest="eou_command", metavar="ACTION")
    p.set_defaults(func=lambda args: p.print_help() or 2)
    t = eou_sub.add_parser("train", help="generate the text data, extract SmolLM2 features, fit the head, "
                           "write weights/eou/ (safetensors + manifest.json)")
    t.add_argument("--out", default=None, help="output folder (default: weights/eou/)")
    t.add_argument("--threshold", type=float, default=None,
                   help="decision threshold stored in the head (default: the one chosen by `parley bench eot`)")
    t.add_argument("--threads", type=int, default=2, help="torch threads (recorded: results may differ with it)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)
    s = eou_sub.add_parser("score", help="end-of-turn scores of typed text: end-token mass and learned head")
    s.add_argument("text", nargs="+", help="one or more utterances")
    s.add_argument("--context", default=None, help="the agent's last reply")
    s.add_argument("--weights", default=None, help="head folder (default: weights/eou/)")
    s.set_defaults(func=_score)


def _train(args: argparse.Namespace) -> int:
    import dataclasses  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from model.components.llm import load_llm  # noqa: PLC0415
    from voice.eou.train import EouTrainConfig, train_head  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    cfg = EouTrainConfig()
    if args.out:
        cfg = dataclasses.replace(cfg, out_dir=args.out)
    if args.threshold is not None:
        cfg = dataclasses.replace(cfg, threshold=args.threshold)
    man = train_head(cfg, load_llm(), progress=not args.quiet)
    val = man["eval"]["validation (held-out templates, train-only fit)"]
    c = man["data"]["counts"]
    print(f"{cfg.out_dir}: {c['train_utterances']} + {c['val_utterances']} utterances, {man['data']['rows']} rows; "
          f"l2 {man['training']['l2']:g}; validation AUC {val['val_auc']:.3f} (end-token mass alone "
          f"{val['old_score_val_auc']:.3f}), log loss {val['val_log_loss']:.3f}", file=sys.stderr)
    for r in man["eval"]["eval_sentences_text_only"]:
        print(f"  {'complete' if r['complete'] else 'cut     '}  old {r['old']:.3f}  new {r['new']:.3f}  {r['text']}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from model.components.eou import end_of_turn_prob  # noqa: PLC0415
    from model.components.eou_head import EOU_DIR, OLD_THRESHOLD, load_eou_head  # noqa: PLC0415
    from model.components.llm import load_llm  # noqa: PLC0415

    head = load_eou_head(args.weights or EOU_DIR)
    llm = load_llm()
    print(f"threshold {head.threshold:g} (end-token mass alone: {OLD_THRESHOLD:g})")
    for text in args.text:
        p_old, p_new = end_of_turn_prob(llm, text, args.context), head.score(llm, text, args.context)
        mark = "end" if p_new >= head.threshold else "wait"
        print(f"old {p_old:.3f}  new {p_new:.3f}  {mark:4s}  {text}")
    return 0
