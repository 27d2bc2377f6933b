"""Codec weights (safetensors shards + manifest) and the `.pcodes` file format.

Weights: `weights/codec/model-0000k-of-0000n.safetensors` (float16, <= 15 MiB each, EnCodec's
parameter names; the codebook EMA average is dropped, sizes kept) with the `CodecConfig` as JSON
in every file's metadata, and `manifest.json` (sha256 of each file, data, steps, eval table).

.pcodes (little endian):
  offset size
  0      4    magic b"PCOD"
  4      2    format version (2; version 1 files, without the codec id, are read too)
  6      4    sample_rate (Hz)
  10     4    hop (samples per frame)
  14     2    n_q (codebooks K)
  16     4    bins (entries per codebook)
  20     4    frames T
  24     8    num_samples (original length, for trimming the decoded audio)
  32     8    codec id (version 2): first 8 bytes of the sha256 of the codec's weights files
  40     K*T*2 codes, uint16, row-major (K, T)          (version 1 files: codes at offset 32)
  end    4    CRC-32 of bytes [0, end)
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from model.common.checkpoint import file_sha256, join_rows, write_shards
from model.common.errors import ParleyError
from model.common.paths import WEIGHTS_DIR

DEFAULT_WEIGHTS = WEIGHTS_DIR / "codec"
FORMAT = "parley-codec-v1"
MAX_SHARD_BYTES = 15 * 1024 * 1024
_DROP = ("embed_avg",)  # training-only buffers rebuilt on load


def export_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Inference state dict: float16 floats, without training-only buffers."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.rsplit(".", 1)[-1] in _DROP:
            continue
        sd[k] = v.detach().to("cpu").contiguous()
        if sd[k].is_floating_point() and not k.endswith(("cluster_size", "inited")):
            sd[k] = sd[k].half()
    return sd


def save_codec(model: torch.nn.Module, out_dir: str | Path, manifest: dict | None = None) -> list[Path]:
    """Write sharded safetensors + manifest.json into out_dir (replacing older shards)."""
    meta = {"format": FORMAT, "config": json.dumps(model.cfg.to_dict())}  # type: ignore[attr-defined]
    man = {**(manifest or {}), "format": FORMAT, "config": model.cfg.to_dict()}  # type: ignore[attr-defined]
    return write_shards(export_state(model), out_dir, meta, man, MAX_SHARD_BYTES)


def load_codec(path: str | Path | None = None, device: str | torch.device = "cpu",
               verify: bool = False) -> "ParleyCodec":  # noqa: F821
    """Load the codec from a weights folder (default: the repo's `weights/codec/`), eval mode."""
    from safetensors import safe_open

    from codec.model import CodecConfig, ParleyCodec

    folder = Path(path) if path is not None else DEFAULT_WEIGHTS
    files = sorted(folder.glob("model-*.safetensors")) if folder.is_dir() else [folder]
    if not files or not files[0].exists():
        raise ParleyError(f"no codec weights in {folder} (expected model-*.safetensors)")
    if verify and (folder / "manifest.json").exists():
        man = json.loads((folder / "manifest.json").read_text())
        for name, info in man.get("files", {}).items():
            if file_sha256(folder / name) != info["sha256"]:
                raise ParleyError(f"{folder / name}: sha256 does not match manifest.json")
    sd: dict[str, torch.Tensor] = {}
    cfg = None
    for f in files:
        try:
            with safe_open(str(f), "pt") as h:
                meta = h.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ParleyError(f"{f}: not a Parley codec file (format {meta.get('format')!r})")
                cfg = CodecConfig.from_dict(json.loads(meta["config"]))
                for k in h.keys():
                    sd[k] = h.get_tensor(k).float()
        except ParleyError:
            raise
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise ParleyError(f"{f}: corrupt or truncated codec weights ({str(e).splitlines()[0]})") from None
    assert cfg is not None
    model = ParleyCodec(cfg)
    try:
        load_state(model, join_rows(sd))  # write_shards cuts a tensor over the file limit into rows
    except RuntimeError as e:  # missing / mis-shaped tensors (a shard lost or from another version)
        raise ParleyError(f"{folder}: codec weights do not match their config ({str(e).splitlines()[0]})") from None
    model.codec_id = codec_id(folder)  # the version its tokens are tied to travels with the object
    return model.to(device).eval()


def load_state(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load an exported (possibly reduced) state dict; rebuild EMA averages from embed * size."""
    full = dict(sd)
    for k in model.state_dict():
        if k.endswith("embed_avg") and k not in full:
            base = k[: -len("embed_avg")]
            full[k] = full[base + "embed"] * full[base + "cluster_size"][:, None]
    model.load_state_dict(full, strict=True)


@torch.no_grad()
def silence_codes(codec: torch.nn.Module) -> np.ndarray:
    """(K,) the codes of silence: the middle frame of one second of zeros through the encoder, past
    the padding's edge effects. The token manifests' ``silence`` (what training lays in every silent
    stretch) and the served sessions' silent frames must be these same codes."""
    dev = next(codec.parameters()).device
    c = codec.encode(torch.zeros(1, int(codec.sample_rate), device=dev))[0]  # (K, frames)
    return c[:, c.shape[1] // 2].cpu().numpy().astype(np.int64)


def codec_id(path: str | Path | None = None) -> str:
    """The codec version that tokens are tied to: 16 hex digits of the sha256 over the weights
    files' bytes (`weights/codec/` by default). Recorded in .pcodes headers and token manifests."""
    import hashlib

    folder = Path(path) if path is not None else DEFAULT_WEIGHTS
    files = sorted(folder.glob("model-*.safetensors")) if folder.is_dir() else [folder]
    if not files or not files[0].exists():
        raise ParleyError(f"no codec weights in {folder} (expected model-*.safetensors)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---- .pcodes ------------------------------------------------------------------------------------
MAGIC = b"PCOD"
VERSION = 2  # 2 adds the codec id (8 bytes) after the v1 header; v1 files are still read
_HEADER = struct.Struct("<4sHIIHIIQ")  # 32 bytes (v1 and v2)
_ID = struct.Struct("<8s")  # v2: codec_id() as 8 raw bytes


def write_pcodes(path: str | Path, codes: np.ndarray, sample_rate: int, hop: int, bins: int,
                 num_samples: int, codec: str = "0" * 16) -> None:
    """codes (K, T) ints in [0, bins) -> file; `codec` = codec_id() of the codec that made them."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes should be (K, T), got {codes.shape}")
    if bins > 65536:
        raise ValueError("bins > 65536 do not fit in uint16")
    K, T = codes.shape
    body = _HEADER.pack(MAGIC, VERSION, sample_rate, hop, K, bins, T, num_samples)
    body += _ID.pack(bytes.fromhex(codec))
    body += codes.astype("<u2").tobytes()
    Path(path).write_bytes(body + struct.pack("<I", zlib.crc32(body)))


def read_pcodes(path: str | Path) -> tuple[np.ndarray, dict]:
    """file -> (codes (K, T) int64, header dict). ParleyError on a foreign, truncated or corrupt file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ParleyError(f"cannot read {p}: {e.strerror or e}") from None
    if len(data) < 4 or data[:4] != MAGIC:
        raise ParleyError(f"{p}: not a .pcodes file (bad magic)")
    if len(data) < _HEADER.size + 4:
        raise ParleyError(f"{p}: truncated .pcodes file ({len(data)} bytes, header needs {_HEADER.size + 4})")
    _, version, sr, hop, K, bins, T, n = _HEADER.unpack_from(data)
    if version not in (1, 2):
        raise ParleyError(f"{p}: .pcodes format version {version} is not supported (this reader: 1, {VERSION})")
    head = _HEADER.size + (_ID.size if version >= 2 else 0)
    want = head + K * T * 2 + 4
    if len(data) < want:
        raise ParleyError(f"{p}: truncated .pcodes file ({len(data)} of {want} bytes)")
    if len(data) > want:
        raise ParleyError(f"{p}: corrupt .pcodes file ({len(data) - want} unexpected trailing bytes)")
    (crc,) = struct.unpack_from("<I", data, want - 4)
    if zlib.crc32(data[: want - 4]) != crc:
        raise ParleyError(f"{p}: corrupt .pcodes file (checksum mismatch)")
    cid = _ID.unpack_from(data, _HEADER.size)[0].hex() if version >= 2 else None
    codes = np.frombuffer(data, "<u2", K * T, head).reshape(K, T).astype(np.int64)
    if codes.size and codes.max() >= bins:
        raise ParleyError(f"{p}: corrupt .pcodes file (code >= {bins})")
    return codes, {"version": version, "sample_rate": sr, "hop": hop, "n_q": K, "bins": bins,
                   "frames": T, "num_samples": n, "codec_id": cid}
