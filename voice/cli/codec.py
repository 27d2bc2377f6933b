"""`parley codec ...` subcommands: prepare-data, train, eval, plot-log, encode, decode.

Also runnable without the console script (e.g. on a GPU machine): `python -m voice codec train ...`.
"""

from __future__ import annotations

import argparse
import sys

from model.common.errors import ParleyError

DEFAULT_DATA = "data/codec"
DEFAULT_VARIANT = "25hz-sem-bypass"  # the arm chosen by codec v2 GPU run 1 (codec/README.md)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codec", help="the neural speech codec: data, training, eval, encode/decode")
    cs = p.add_subparsers(dest="codec_command", metavar="CODEC")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    q = cs.add_parser("prepare-data", help="write training shards + held-out eval set (CPU)")
    q.add_argument("--out", default=DEFAULT_DATA)
    q.add_argument("--shard-minutes", type=float, default=6.0)
    q.add_argument("--synth-scale", type=float, default=1.0, help="scale the number of synthetic utterances")
    q.add_argument("--eval-per-source", type=int, default=40)
    q.add_argument("--only", default="", help="comma-separated sources to (re)write, eval set untouched "
                   "(e.g. en-amazon_queen,en-beneath_a_steel_sky)")
    q.add_argument("--shard-prefix", default="shard")
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
    t.add_argument("--adv-start", type=int, default=100_000, help="discriminator from this step ...")
    t.add_argument("--adv-start-frac", type=float, default=0.7, help="... or from this fraction of --max-minutes "
                   "(run 1: STOI fell once it had run a while)")
    t.add_argument("--ckpt-every-s", type=float, default=180.0)
    t.add_argument("--init-from", default=None, help="warm start from exported weights (folder)")
    t.add_argument("--variant", default=DEFAULT_VARIANT, help="codec variant (codec/variants.py): "
                   "frame rate, codebooks, semantic distillation, ...")
    t.add_argument("--teacher", default="", help="Whisper teacher file (export-teacher): semantic "
                   "distillation and the whisper_cos eval column")
    t.add_argument("--eval-dir", default="", help="prepare-data folder: quick held-out eval at checkpoints")
    t.add_argument("--tiny", action="store_true", help="tiny model (tests / CPU smoke runs)")
    t.set_defaults(func=_train)

    sw = cs.add_parser("sweep", help="train several variants side by side on one GPU, then compare")
    sw.add_argument("--variants", required=True,
                    help="comma-separated arms VARIANT[@LABEL][:ARGS] (codec/variants.py; ARGS: `train` flags for that arm)")
    sw.add_argument("--out", default="runs/sweep", help="one sub-folder per variant + summary.json")
    sw.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: arguments for every `train` (e.g. -- --data D --max-minutes 18)")
    sw.set_defaults(func=_sweep)

    ps = cs.add_parser("plot-sweep", help="held-out eval curves of a sweep folder as a PNG")
    ps.add_argument("sweep_dir")
    ps.add_argument("out")
    ps.set_defaults(func=lambda a: __import__("codec.sweep", fromlist=["plot_sweep"]).plot_sweep(a.sweep_dir, a.out) or 0)

    po = cs.add_parser("pack-opus", help="FLAC shards -> Ogg Opus groups that each fit one GPU-machine call")
    po.add_argument("src", help="folder of FLAC shards (prepare-data's train/)")
    po.add_argument("dst", help="writes dst/g00, dst/g01, ... (idempotent)")
    po.add_argument("--bitrate", default="24k")
    po.add_argument("--group-mb", type=float, default=55.0)
    po.set_defaults(func=_pack_opus)

    uo = cs.add_parser("unpack-opus", help="Ogg Opus shards -> FLAC in a training folder, on all cores")
    uo.add_argument("dst", help="training folder (a running job picks the shards up)")
    uo.add_argument("src", nargs="+", help=".ogg files or folders holding them")
    uo.set_defaults(func=_unpack_opus)

    xt = cs.add_parser("export-teacher", help="write the Whisper tiny.en encoder teacher file (CPU)")
    xt.add_argument("out", help="output .safetensors")
    xt.set_defaults(func=_export_teacher)

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

    only = tuple(x for x in args.only.split(",") if x)
    minutes = prepare_data(args.out, args.shard_minutes, args.synth_scale, eval_per_source=args.eval_per_source,
                           only=only, shard_prefix=args.shard_prefix)
    print(json.dumps({k: round(v, 1) for k, v in minutes.items()}, indent=1))
    print(f"total {sum(minutes.values()) / 60:.2f} h of training audio in {args.out}/train")
    return 0


def _train(args: argparse.Namespace) -> int:
    from codec.train import TrainConfig, train
    from codec.variants import get_variant

    try:
        v = get_variant(args.variant, tiny=args.tiny)
    except KeyError as e:
        raise ParleyError(str(e.args[0])) from None
    if v.codec.semantic_dim and not args.teacher:
        raise ParleyError(f"variant {args.variant} distils Whisper: pass --teacher FILE "
                          "(write it with `parley codec export-teacher FILE`)")
    tc = TrainConfig(batch_size=args.batch_size, segment_s=args.segment_s, max_steps=args.max_steps,
                     max_minutes=args.max_minutes, lr=args.lr, adv_start=args.adv_start,
                     adv_start_frac=args.adv_start_frac, ckpt_every_s=args.ckpt_every_s,
                     bypass_p=v.bypass_p, teacher=args.teacher, eval_dir=args.eval_dir)
    last = train(args.data, args.out, v.codec, tc, device=args.device, init_from=args.init_from)
    print(last)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from codec.sweep import run_sweep

    extra = [a for a in args.train_args if a != "--"]
    train_cmd = [sys.executable, "-m", "voice", "codec", "train"]
    return run_sweep([v for v in args.variants.split(",") if v], args.out, train_cmd, extra)


def _pack_opus(args: argparse.Namespace) -> int:
    from codec.stage import pack_opus

    for g in pack_opus(args.src, args.dst, args.bitrate, args.group_mb):
        n, mb = len(list(g.glob("*.ogg"))), sum(f.stat().st_size for f in g.glob("*.ogg")) / 2**20
        print(f"{g}: {n} shards, {mb:.1f} MiB")
    return 0


def _unpack_opus(args: argparse.Namespace) -> int:
    from pathlib import Path

    from codec.stage import unpack_opus

    srcs = [f for s in map(Path, args.src) for f in (sorted(s.rglob("*.ogg")) if s.is_dir() else [s])]
    n = unpack_opus(srcs, args.dst)
    print(f"{n} of {len(srcs)} shards written to {args.dst} as FLAC")
    return 0


def _export_teacher(args: argparse.Namespace) -> int:
    from whisper.audio import mel_filters

    from codec.semantic import save_teacher, teacher_from_whisper
    from model.components.asr import WhisperASR

    asr = WhisperASR.load("tiny.en")
    teacher = teacher_from_whisper(asr.model, mel_filters("cpu", asr.model.dims.n_mels))
    save_teacher(teacher, args.out)
    print(f"{args.out}: Whisper tiny.en encoder teacher ({teacher.dim} dims)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from codec.evaluate import run_eval

    asr = None
    if not args.no_asr:
        from model.components.asr import WhisperASR

        asr = WhisperASR.load("tiny.en").transcribe_batch
    run_eval(args.weights, args.data, limit=args.limit, n_qs=args.n_q, asr=asr,
             json_out=args.json, demos=args.demos)
    return 0


def _encode(args: argparse.Namespace) -> int:
    import torch

    from codec.io import codec_id, load_codec, write_pcodes
    from model.audio import load_audio

    model = load_codec(args.weights)
    x, _ = load_audio(args.input, sample_rate=model.sample_rate)
    with torch.no_grad():
        codes = model.encode(torch.from_numpy(x)[None])[0]
    write_pcodes(args.output, codes.numpy(), model.sample_rate, model.hop_length, model.cfg.bins, len(x),
                 codec=codec_id(args.weights))
    print(f"{args.output}: {codes.shape[0]} codebooks x {codes.shape[1]} frames "
          f"({len(x) / model.sample_rate:.2f} s, {model.cfg.kbps:.2f} kbps)")
    return 0


def _decode(args: argparse.Namespace) -> int:
    import torch

    from codec.io import codec_id, load_codec, read_pcodes
    from model.audio import save_wav

    codes, hdr = read_pcodes(args.input)
    model = load_codec(args.weights)
    if hdr["sample_rate"] != model.sample_rate or hdr["hop"] != model.hop_length or hdr["bins"] != model.cfg.bins:
        raise ParleyError(f"{args.input} was written by a different codec "
                          f"({hdr['sample_rate']} Hz, hop {hdr['hop']}, {hdr['bins']} bins)")
    cid = codec_id(args.weights)
    if hdr["codec_id"] not in (None, "0" * 16, cid):
        raise ParleyError(f"{args.input} was written by codec {hdr['codec_id']}, these weights are "
                          f"{cid}: decode it with the codec that wrote it (--weights)")
    if hdr["n_q"] > model.cfg.n_q:
        raise ParleyError(f"{args.input} has {hdr['n_q']} codebooks, the model {model.cfg.n_q}")
    with torch.no_grad():
        y = model.decode(torch.from_numpy(codes)[None])[0, 0, : hdr["num_samples"]]
    save_wav(args.output, y.numpy(), model.sample_rate)
    print(f"{args.output}: {y.numel() / model.sample_rate:.2f} s at {model.sample_rate} Hz")
    return 0
