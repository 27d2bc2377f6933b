"""`parley codec ...` subcommands: prepare-data, train, eval, plot-log, encode, decode.

Also runnable without the console script (e.g. on a GPU machine): `python -m parley codec train ...`.
"""

from __future__ import annotations

import argparse

from common.errors import ParleyError

DEFAULT_DATA = "data/codec"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codec", help="the neural speech codec: data, training, eval, encode/decode")
    cs = p.add_subparsers(dest="codec_command", metavar="CODEC")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    q = cs.add_parser("prepare-data", help="write training shards + held-out eval set (CPU)")
    q.add_argument("--out", default=DEFAULT_DATA)
    q.add_argument("--shard-minutes", type=float, default=6.0)
    q.add_argument("--synth-scale", type=float, default=1.0, help="scale the number of synthetic utterances")
    q.add_argument("--eval-per-source", type=int, default=40)
    q.set_defaults(func=_prepare)

    t = cs.add_parser("train", help="train or resume (GPU; CPU works for tiny configs)")
    t.add_argument("--data", default=f"{DEFAULT_DATA}/train", help="folder of FLAC shards")
    t.add_argument("--out", default="runs/codec", help="checkpoints, log.jsonl, export/")
    t.add_argument("--device", default="cuda")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--segment-s", type=float, default=2.4)
    t.add_argument("--max-steps", type=int, default=20000)
    t.add_argument("--max-minutes", type=float, default=0.0)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--adv-start", type=int, default=3000)
    t.add_argument("--adv-start-frac", type=float, default=1.0)
    t.add_argument("--ckpt-every-s", type=float, default=180.0)
    t.add_argument("--init-from", default=None, help="warm start from exported weights (folder)")
    t.add_argument("--tiny", action="store_true", help="tiny model (tests / CPU smoke runs)")
    t.set_defaults(func=_train)

    pl = cs.add_parser("plot-log", help="loss curves of a training log.jsonl as a PNG")
    pl.add_argument("log")
    pl.add_argument("out")
    pl.set_defaults(func=lambda a: __import__("codec.train", fromlist=["plot_log"]).plot_log(a.log, a.out) or 0)

    e = cs.add_parser("eval", help="held-out eval table (mel distance, STOI, PESQ, Whisper WER)")
    e.add_argument("--weights", default=None, help="weights folder (default weights/codec)")
    e.add_argument("--data", default=DEFAULT_DATA)
    e.add_argument("--limit", type=int, default=0, help="utterances per source (0: all)")
    e.add_argument("--n-q", type=int, nargs="*", default=None, help="codebook counts to evaluate")
    e.add_argument("--no-asr", action="store_true", help="skip the Whisper WER columns")
    e.add_argument("--json", default=None, help="write the results here")
    e.add_argument("--demos", default=None, help="write a few reconstructions into this folder")
    e.set_defaults(func=_eval)

    en = cs.add_parser("encode", help="audio file -> .pcodes")
    en.add_argument("input")
    en.add_argument("output")
    en.add_argument("--weights", default=None)
    en.set_defaults(func=_encode)
    de = cs.add_parser("decode", help=".pcodes -> wav (16 kHz)")
    de.add_argument("input")
    de.add_argument("output")
    de.add_argument("--weights", default=None)
    de.set_defaults(func=_decode)


def _prepare(args: argparse.Namespace) -> int:
    import json

    from codec.data import prepare_data

    minutes = prepare_data(args.out, args.shard_minutes, args.synth_scale, eval_per_source=args.eval_per_source)
    print(json.dumps({k: round(v, 1) for k, v in minutes.items()}, indent=1))
    print(f"total {sum(minutes.values()) / 60:.2f} h of training audio in {args.out}/train")
    return 0


def _train(args: argparse.Namespace) -> int:
    from codec.model import CodecConfig
    from codec.train import TrainConfig, train

    cc = CodecConfig()
    if args.tiny:
        cc = CodecConfig(ratios=(2, 2, 2, 2), n_filters=4, dimension=8, lstm=1, n_q=2, bins=16)
    tc = TrainConfig(batch_size=args.batch_size, segment_s=args.segment_s, max_steps=args.max_steps,
                     max_minutes=args.max_minutes, lr=args.lr, adv_start=args.adv_start,
                     adv_start_frac=args.adv_start_frac, ckpt_every_s=args.ckpt_every_s)
    last = train(args.data, args.out, cc, tc, device=args.device, init_from=args.init_from)
    print(last)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from codec.evaluate import run_eval

    asr = None
    if not args.no_asr:
        from voice.components.asr import WhisperASR

        asr = WhisperASR.load("tiny.en").transcribe_batch
    run_eval(args.weights, args.data, limit=args.limit, n_qs=args.n_q, asr=asr,
             json_out=args.json, demos=args.demos)
    return 0


def _encode(args: argparse.Namespace) -> int:
    import torch

    from codec.io import load_codec, write_pcodes
    from voice.audio import load_audio

    model = load_codec(args.weights)
    x, _ = load_audio(args.input, sample_rate=model.sample_rate)
    with torch.no_grad():
        codes = model.encode(torch.from_numpy(x)[None])[0]
    write_pcodes(args.output, codes.numpy(), model.sample_rate, model.hop_length, model.cfg.bins, len(x))
    print(f"{args.output}: {codes.shape[0]} codebooks x {codes.shape[1]} frames "
          f"({len(x) / model.sample_rate:.2f} s, {model.cfg.kbps:.2f} kbps)")
    return 0


def _decode(args: argparse.Namespace) -> int:
    import torch

    from codec.io import load_codec, read_pcodes
    from voice.audio import save_wav

    codes, hdr = read_pcodes(args.input)
    model = load_codec(args.weights)
    if hdr["sample_rate"] != model.sample_rate or hdr["hop"] != model.hop_length or hdr["bins"] != model.cfg.bins:
        raise ParleyError(f"{args.input} was written by a different codec "
                          f"({hdr['sample_rate']} Hz, hop {hdr['hop']}, {hdr['bins']} bins)")
    if hdr["n_q"] > model.cfg.n_q:
        raise ParleyError(f"{args.input} has {hdr['n_q']} codebooks, the model {model.cfg.n_q}")
    with torch.no_grad():
        y = model.decode(torch.from_numpy(codes)[None])[0, 0, : hdr["num_samples"]]
    save_wav(args.output, y.numpy(), model.sample_rate)
    print(f"{args.output}: {y.numel() / model.sample_rate:.2f} s at {model.sample_rate} Hz")
    return 0
