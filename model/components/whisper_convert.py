"""CTranslate2 Whisper (`model.bin`) -> openai-whisper state dict.

CT2 `model.bin` layout (binary version >= 4, little endian; see ctranslate2/specs/model_spec.py):

    u32 version | str spec_name | u32 spec_revision | u32 n_vars
    n_vars x ( str name | u8 rank | u32 dims[rank] | u8 dtype_id | u32 n_bytes | bytes )
    u32 n_aliases | n_aliases x ( str alias | str target )
    str := u16 len (incl. NUL) | utf-8 bytes | NUL

Name mapping (CT2 -> openai-whisper), per layer i:

    encoder/conv{1,2}                          -> encoder.conv{1,2}
    encoder/position_encodings/encodings       -> encoder.positional_embedding   (1500, d)
    */layer_i/self_attention/linear_0 (3d, d)  -> blocks.i.attn.{query,key,value}  (q|k|v fused)
    */layer_i/self_attention/linear_1          -> blocks.i.attn.out
    */layer_i/self_attention/layer_norm        -> blocks.i.attn_ln
    decoder/layer_i/attention/linear_0         -> blocks.i.cross_attn.query
    decoder/layer_i/attention/linear_1 (2d, d) -> blocks.i.cross_attn.{key,value}  (k|v fused)
    decoder/layer_i/attention/linear_2         -> blocks.i.cross_attn.out
    decoder/layer_i/attention/layer_norm       -> blocks.i.cross_attn_ln
    */layer_i/ffn/linear_{0,1}                 -> blocks.i.mlp.{0,2}
    */layer_i/ffn/layer_norm                   -> blocks.i.mlp_ln
    encoder/layer_norm, decoder/layer_norm     -> encoder.ln_post, decoder.ln
    decoder/embeddings/weight                  -> decoder.token_embedding.weight (tied output)
    decoder/position_encodings/encodings       -> decoder.positional_embedding   (448, d)

Layer norms use gamma/beta (-> weight/bias). Whisper's key projections have no bias: CT2
stores a zero bias in the fused tensor, which we check and drop.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.common.checkpoint import file_sha256
from model.common.errors import ParleyError

# CT2 DataType ids (ctranslate2/specs/model_spec.py `_dtype_to_type_id`).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


@dataclass(frozen=True)
class CT2Model:
    """Variables of a CTranslate2 model file (numpy arrays, aliases resolved)."""

    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]


def read_ct2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 `model.bin` into numpy arrays (zero-copy views of the file bytes)."""
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise ParleyError(f"cannot read CTranslate2 model {p}: {e}") from None
    off = 0

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return vals

    def take_str() -> str:
        nonlocal off
        (n,) = take("H")
        s = buf[off : off + n - 1].decode("utf-8")
        off += n
        return s

    try:
        (version,) = take("I")
        if not 4 <= version <= 6:
            raise ParleyError(f"{p}: unsupported CTranslate2 binary version {version} (need 4-6)")
        spec = take_str()
        (revision,) = take("I")
        (n_vars,) = take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(n_vars):
            name = take_str()
            (rank,) = take("B")
            dims = take("I" * rank) if rank else ()
            dtype_id, n_bytes = take("BI")
            if dtype_id not in _CT2_DTYPES:
                raise ParleyError(f"{p}: variable {name} has unsupported dtype id {dtype_id}")
            arr = np.frombuffer(buf, dtype=_CT2_DTYPES[dtype_id], count=n_bytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, offset=off)
            variables[name] = arr.reshape(dims)
            off += n_bytes
        (n_alias,) = take("I")
        for _ in range(n_alias):
            alias, target = take_str(), take_str()
            variables[alias] = variables[target]
    except struct.error:
        raise ParleyError(f"{p}: truncated or corrupt CTranslate2 model file") from None
    return CT2Model(spec=spec, revision=revision, variables=variables)


def _n_layers(names: list[str], prefix: str) -> int:
    idx = {int(m.group(1)) for n in names if (m := re.match(rf"{prefix}/layer_(\d+)/", n))}
    return max(idx) + 1 if idx else 0


def ct2_to_whisper(ct2: CT2Model) -> tuple[dict, dict[str, np.ndarray]]:
    """Map CT2 Whisper variables to (ModelDimensions kwargs, openai-whisper state dict)."""
    if ct2.spec != "WhisperSpec":
        raise ParleyError(f"not a Whisper CTranslate2 model (spec {ct2.spec})")
    v = ct2.variables
    names = list(v)
    d = v["encoder/conv1/weight"].shape[0]
    dims = dict(
        n_mels=int(v["encoder/conv1/weight"].shape[1]),
        n_audio_ctx=int(v["encoder/position_encodings/encodings"].shape[0]),
        n_audio_state=int(d),
        n_audio_head=int(v["encoder/num_heads"]) if "encoder/num_heads" in v else d // 64,
        n_audio_layer=_n_layers(names, "encoder"),
        n_vocab=int(v["decoder/embeddings/weight"].shape[0]),
        n_text_ctx=int(v["decoder/position_encodings/encodings"].shape[0]),
        n_text_state=int(v["decoder/embeddings/weight"].shape[1]),
        n_text_head=int(v["decoder/num_heads"]) if "decoder/num_heads" in v else d // 64,
        n_text_layer=_n_layers(names, "decoder"),
    )
    sd: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def split(dst_prefix: str, src: str, parts: tuple[str, ...]) -> None:
        w, b = v[f"{src}/weight"], v[f"{src}/bias"]
        n = w.shape[0] // len(parts)
        for k, part in enumerate(parts):
            sl = slice(k * n, (k + 1) * n)
            sd[f"{dst_prefix}.{part}.weight"] = w[sl]
            if part == "key":  # whisper's key projection has no bias
                if np.abs(b[sl].astype(np.float32)).max() > 1e-6:
                    raise ParleyError(f"{src}: non-zero key bias cannot map to openai-whisper")
            else:
                sd[f"{dst_prefix}.{part}.bias"] = b[sl]

    def block(side: str, i: int, cross: bool) -> None:
        src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        lin(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            lin(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
            lin(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        lin(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        lin(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    try:
        lin("encoder.conv1", "encoder/conv1")
        lin("encoder.conv2", "encoder/conv2")
        sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
        for i in range(dims["n_audio_layer"]):
            block("encoder", i, cross=False)
        ln("encoder.ln_post", "encoder/layer_norm")
        sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
        sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
        for i in range(dims["n_text_layer"]):
            block("decoder", i, cross=True)
        ln("decoder.ln", "decoder/layer_norm")
    except KeyError as e:
        raise ParleyError(f"CTranslate2 Whisper model lacks variable {e}") from None
    return dims, sd


def read_alignment_heads(model_dir: Path) -> list[list[int]] | None:
    """`alignment_heads` ([layer, head] pairs) from a CT2 model's config.json, if present."""
    cfg = model_dir / "config.json"
    if cfg.exists():
        heads = json.loads(cfg.read_text()).get("alignment_heads")
        if heads:
            return [list(map(int, h)) for h in heads]
    return None


def convert_cached(model_bin: Path, cache_root: Path) -> Path:
    """Convert `model_bin` once to `cache_root/whisper/<sha16>.safetensors`; return that path.

    The safetensors file keeps float16 tensors plus the `dims` (and alignment heads) as JSON
    metadata, so it rebuilds the model on its own.
    """
    from safetensors.numpy import save_file

    sha = file_sha256(model_bin)
    out = cache_root / "whisper" / f"ct2-{sha[:16]}.safetensors"
    if out.exists():
        return out
    dims, sd = ct2_to_whisper(read_ct2(model_bin))
    meta = {"dims": json.dumps(dims), "source_sha256": sha, "source": str(model_bin)}
    heads = read_alignment_heads(model_bin.parent)
    if heads:
        meta["alignment_heads"] = json.dumps(heads)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(a) for k, a in sd.items()}, str(tmp), metadata=meta)
    tmp.replace(out)
    return out
