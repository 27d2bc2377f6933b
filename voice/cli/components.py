"""`parley say` and `parley transcribe` (argparse only; lazy imports)."""

from __future__ import annotations

import argparse
import sys

from model.common.audio_constants import SPEECH_SR


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("say", help="text to speech into a WAV file (piper joe, espeak-ng, flite)")
    p.add_argument("text", nargs="?", help="text to speak")
    p.add_argument("-o", "--output", help="output WAV path")
    p.add_argument("--voice", default="joe", help="joe | espeak:en-us+m3 | flite:slt | piper:PATH.onnx")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate (>1 faster; 0.25-4)")
    p.add_argument("--list-voices", action="store_true", help="print the available voice names and exit")
    p.set_defaults(func=_say)

    p = sub.add_parser("transcribe", help="speech to text with Whisper (bundled tiny.en by default)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audio file(s) (WAV/FLAC/OGG; any sample rate, resampled to 16 kHz); several are batched")
    p.add_argument("--model", default="tiny.en", help="tiny.en | CT2 dir | .pt | .safetensors | openai:NAME")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.set_defaults(func=_transcribe)


def _say(args: argparse.Namespace) -> int:
    from model.common.errors import ParleyError

    if args.list_voices:
        from model.components.tts import list_voices

        print("\n".join(list_voices()))
        return 0
    if args.text is None:
        raise ParleyError("say: give the TEXT to speak (or --list-voices)")
    if not args.output:
        raise ParleyError("say: give an output file with -o OUT.wav")
    from model.audio import save_wav
    from model.components.tts import load_voice

    voice = load_voice(args.voice)
    audio = voice.synthesize(args.text, speed=args.speed)
    save_wav(args.output, audio, voice.sample_rate)
    print(f"{args.output}: {len(audio) / voice.sample_rate:.2f} s, {voice.sample_rate} Hz, voice {voice.name}",
          file=sys.stderr)
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from model.audio import load_audio

    audios = [load_audio(f, sample_rate=SPEECH_SR)[0] for f in args.files]  # check files before the model
    from model.components.asr import WhisperASR

    asr = WhisperASR.load(args.model, device=args.device)
    texts = asr.transcribe_batch(audios)
    if len(texts) == 1:
        print(texts[0])
    else:
        for f, t in zip(args.files, texts):
            print(f"{f}\t{t}")
    return 0
