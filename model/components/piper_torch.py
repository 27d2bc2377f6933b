"""Piper VITS voices in torch: an ONNX voice's weights in piper's own `SynthesizerTrn`, batched.

    net, dims = load_synthesizer(onnx_path, num_speakers=1, device="cuda")
    out = infer_batch(net, ids, lengths, noise_scale=0.0, length_scale=1.0, noise_w=0.0)
    out.audio[b, : out.audio_lengths[b]]          # item b, float32, equal to onnxruntime's output

The model code is piper-tts's (`piper.train.vits`: pure torch, nothing of lightning is imported);
only the weights come from the voice's `.onnx`. Its initializers keep the VITS parameter names
(`enc_p...`, `dp...`, `flow...`, `dec...`) except the constants the exporter folded: the weight-
normed convolutions of the flow's WaveNets (`onnx::Conv_8240` -> owner from the consuming node
`/flow/flows.0/enc/in_layers.0/Conv`: input 1 is `.weight`, input 2 `.bias`), the text embedding
(input 0 of `/enc_p/emb/Gather`) and the duration predictor's `exp(-logs)` (`/dp/flows.0/Exp_output_0`).
The hyper-parameters are read off the graph too (shapes, strides, dilations): `VitsDims`.

Padding: every part of VITS masks its padded frames except the HiFi-GAN decoder, whose convolutions
would see the neighbour frames of the padding, so a padded row would differ from the same item
decoded alone near its end. `infer_batch` runs the library's decoder modules with the mask applied
before every convolution (`_decode_masked`), which makes a batch row equal its own unpadded decode.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model.common.errors import ParleyError

_CONST_MAX = 16  # a float initializer this small (or 0-/1-D) may be a folded graph constant, not a weight


@dataclass(frozen=True)
class VitsDims:
    """`SynthesizerTrn`'s hyper-parameters, as read off an exported voice (medium: resblock "2",
    upsampling 8, 8, 4 from 256 channels, hidden 192)."""

    n_vocab: int  # phoneme ids (text embedding rows)
    hidden_channels: int  # text encoder width
    inter_channels: int  # latent z channels
    filter_channels: int  # text encoder FFN width
    n_heads: int
    n_layers: int  # text encoder layers
    kernel_size: int  # text encoder FFN kernel
    resblock: str  # "1" (high) or "2" (x-low, low, medium)
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the upsampling rates: 256)."""
        return math.prod(self.upsample_rates)


def _owner(node_name: str) -> str:
    """'/flow/flows.0/enc/in_layers.0/Conv' -> 'flow.flows.0.enc.in_layers.0'."""
    return node_name.strip("/").rpartition("/")[0].replace("/", ".")


def onnx_weights(model) -> tuple[dict[str, np.ndarray], dict[str, dict]]:  # onnx.ModelProto
    """-> ({VITS parameter name: array} for every weight of the graph, {module: conv attributes}).

    Raises ParleyError when a weight-sized initializer has no owner."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    used: set[str] = set()
    attrs: dict[str, dict] = {}

    def put(key: str, init_name: str, value: np.ndarray | None = None) -> None:
        a = numpy_helper.to_array(inits[init_name]) if value is None else value
        if key in arrays and not np.array_equal(arrays[key], a):
            raise ParleyError(f"ONNX voice: two different tensors for {key}")
        arrays[key] = a
        used.add(init_name)

    for name in inits:
        if re.match(r"(enc_p|dp|flow|dec|emb_g)\.", name):
            put(name, name)
    for node in model.graph.node:
        owner = _owner(node.name)
        if node.op_type in ("Conv", "ConvTranspose"):
            attrs[owner] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            for k, suffix in ((1, "weight"), (2, "bias")):
                if k < len(node.input) and node.input[k] in inits:
                    put(f"{owner}.{suffix}", node.input[k])
        elif node.op_type == "Gather" and node.name.endswith("emb/Gather") and node.input[0] in inits:
            put(f"{owner}.weight", node.input[0])  # the text embedding (exported under another name)
    for name in inits:  # ElementwiseAffine.reverse multiplies by exp(-logs): folded into one constant
        m = re.fullmatch(r"/(dp/flows\.\d+)/Exp_output_0", name)
        if m:
            put(m.group(1).replace("/", ".") + ".logs", name, -np.log(numpy_helper.to_array(inits[name])))
    unmapped = []
    for name, t in inits.items():
        if name in used:
            continue
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and (a.ndim >= 2 or a.size > _CONST_MAX):
            unmapped.append(f"{name} {list(a.shape)}")
    if unmapped:
        raise ParleyError(f"ONNX voice: {len(unmapped)} weight(s) with no VITS owner: {', '.join(unmapped[:8])}")
    return arrays, attrs


def vits_dims(arrays: dict[str, np.ndarray], attrs: dict[str, dict]) -> VitsDims:
    """The hyper-parameters from the weights' shapes and the decoder's strides / dilations."""
    def count(pattern: str) -> int:
        return sum(1 for k in arrays if re.fullmatch(pattern, k))

    try:
        n_vocab, hidden = arrays["enc_p.emb.weight"].shape
        n_ups = count(r"dec\.ups\.\d+\.weight")
        n_res = count(r"dec\.resblocks\.\d+\.convs1?\.0\.weight")
        n_kernels = n_res // n_ups
        kind = "2" if "dec.resblocks.0.convs.0.weight" in arrays else "1"
        convs = "convs" if kind == "2" else "convs1"
        n_dil = count(rf"dec\.resblocks\.0\.{convs}\.\d+\.weight")
        return VitsDims(
            n_vocab=int(n_vocab), hidden_channels=int(hidden),
            inter_channels=int(arrays["enc_p.proj.weight"].shape[0] // 2),
            filter_channels=int(arrays["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0]),
            n_heads=int(hidden // arrays["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[-1]),
            n_layers=count(r"enc_p\.encoder\.attn_layers\.\d+\.conv_q\.weight"),
            kernel_size=int(arrays["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[-1]), resblock=kind,
            resblock_kernel_sizes=tuple(int(arrays[f"dec.resblocks.{j}.{convs}.0.weight"].shape[-1])
                                        for j in range(n_kernels)),
            resblock_dilation_sizes=tuple(tuple(int(attrs[f"dec.resblocks.{j}.{convs}.{c}"]["dilations"][0])
                                                for c in range(n_dil)) for j in range(n_kernels)),
            upsample_rates=tuple(int(attrs[f"dec.ups.{i}"]["strides"][0]) for i in range(n_ups)),
            upsample_initial_channel=int(arrays["dec.conv_pre.weight"].shape[0]),
            upsample_kernel_sizes=tuple(int(arrays[f"dec.ups.{i}.weight"].shape[-1]) for i in range(n_ups)),
        )
    except (KeyError, ZeroDivisionError) as e:
        raise ParleyError(f"ONNX voice: not a piper VITS graph (no {e})") from None


def build_synthesizer(dims: VitsDims) -> torch.nn.Module:
    """piper's `SynthesizerTrn` for inference: weight norm removed (the export folded it) and the
    training-only parts dropped (posterior encoder, the duration predictor's posterior flows and its
    flow 1, which `StochasticDurationPredictor.forward(reverse=True)` skips)."""
    import warnings

    with warnings.catch_warnings():  # piper uses torch.jit.script and the old weight_norm (deprecated)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from piper.train.vits.models import SynthesizerTrn

        net = SynthesizerTrn(
            n_vocab=dims.n_vocab, spec_channels=513, segment_size=32, inter_channels=dims.inter_channels,
            hidden_channels=dims.hidden_channels, filter_channels=dims.filter_channels, n_heads=dims.n_heads,
            n_layers=dims.n_layers, kernel_size=dims.kernel_size, p_dropout=0.0, resblock=dims.resblock,
            resblock_kernel_sizes=dims.resblock_kernel_sizes, resblock_dilation_sizes=dims.resblock_dilation_sizes,
            upsample_rates=dims.upsample_rates, upsample_initial_channel=dims.upsample_initial_channel,
            upsample_kernel_sizes=dims.upsample_kernel_sizes, n_speakers=1, gin_channels=0, use_sdp=True)
    net.dec.remove_weight_norm()
    for flow in net.flow.flows[::2]:  # ResidualCouplingLayer, Flip, ...
        flow.enc.remove_weight_norm()
    del net.enc_q
    for name in ("post_pre", "post_proj", "post_convs", "post_flows"):
        delattr(net.dp, name)
    net.dp.flows[1] = torch.nn.Identity()
    return net.eval()


def load_synthesizer(onnx_voice, num_speakers: int = 1, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32,
                     decoder_dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, VitsDims]:
    """An exported piper voice (`.onnx` path, or a loaded `onnx.ModelProto`) -> (`SynthesizerTrn` on
    `device` / `dtype`, its dims). Every ONNX weight is placed and every model parameter filled, or a
    ParleyError says which. ``decoder_dtype``: the HiFi-GAN decoder's (most of the compute) alone, so
    the durations (float32) stay those of onnxruntime while the audio is decoded in bf16 / fp16."""
    import onnx

    if num_speakers > 1:
        raise ParleyError("piper_torch: multi-speaker voices are not supported (no speaker embedding path)")
    if isinstance(onnx_voice, (str, Path)):
        if not Path(onnx_voice).is_file():
            raise ParleyError(f"piper voice not found: {onnx_voice}")
        onnx_voice = onnx.load(str(onnx_voice))
    arrays, attrs = onnx_weights(onnx_voice)
    dims = vits_dims(arrays, attrs)
    net = build_synthesizer(dims)
    state = net.state_dict()
    missing = sorted(set(state) - set(arrays))
    extra = sorted(set(arrays) - set(state))
    bad = [f"{k} {list(arrays[k].shape)} vs {list(state[k].shape)}"
           for k in sorted(set(state) & set(arrays)) if tuple(arrays[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        raise ParleyError(f"ONNX voice does not fit SynthesizerTrn({dims}): unfilled {missing[:8]}, "
                          f"unplaced {extra[:8]}, shape mismatches {bad[:8]}")
    net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in arrays.items()}, strict=True)
    net = net.to(device=device, dtype=dtype)
    if decoder_dtype is not None:
        net.dec.to(dtype=decoder_dtype)
    return net, dims


class VitsOutput(NamedTuple):
    audio: torch.Tensor  # (B, T_y * hop) float32, zero past each item's length
    audio_lengths: torch.Tensor  # (B,) long: samples of each item (= y_lengths * hop)
    durations: torch.Tensor  # (B, T_x) long: samples per phoneme id (w_ceil * hop; 0 on padding)


def _decode_masked(dec: torch.nn.Module, z: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    """piper's `Generator.forward` (no speaker) with each convolution's input zeroed past the item's
    end, as the zero padding of an unpadded decode. z (B, C, T_y), y_mask (B, 1, T_y) -> (B, T_y * hop)."""
    n_k = dec.num_kernels
    x = dec.conv_pre(z) * y_mask  # (B, C0, T)
    mask = y_mask
    for i, up in enumerate(dec.ups):
        x = up(F.leaky_relu(x, dec.LRELU_SLOPE))  # (B, C0 / 2^(i+1), T * prod(rates[: i + 1]))
        mask = mask.repeat_interleave(up.stride[0], dim=2)
        xs = dec.resblocks[i * n_k](x, mask)  # ResBlock masks its convolutions' inputs and its output
        for j in range(1, n_k):
            xs = xs + dec.resblocks[i * n_k + j](x, mask)
        x = xs / n_k
    x = dec.conv_post(F.leaky_relu(x))  # (B, 1, T_y * hop); slope 0.01 as in Generator.forward
    return torch.tanh(x).squeeze(1)


@torch.no_grad()
def infer_batch(net: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor, noise_scale: float = 0.667,
                length_scale: float = 1.0, noise_w: float = 0.8, frame_multiple: int = 1) -> VitsOutput:
    """`SynthesizerTrn.infer` over a padded batch, with a masked decoder and the durations.

    ids (B, T_x) long phoneme ids (padded with anything), lengths (B,) -> VitsOutput. Each row equals
    the item synthesized alone; with noise_scale = noise_w = 0 it is deterministic. `frame_multiple`
    pads the latent frames T_y up to a multiple (masked like a batch's padding): fewer distinct
    shapes, so on CUDA fewer first-time cuDNN plans (50-170 ms each on an H200)."""
    from piper.train.vits import commons

    assert ids.dim() == 2 and lengths.shape == ids.shape[:1], "ids (B, T_x), lengths (B,)"
    x, m_p, logs_p, x_mask = net.enc_p(ids, lengths)  # (B, H, T_x), (B, C, T_x) x 2, (B, 1, T_x)
    logw = net.dp(x, x_mask, g=None, reverse=True, noise_scale=noise_w)  # (B, 1, T_x)
    w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)  # frames per phoneme id
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()  # (B,)
    t_y = -(-int(y_lengths.max()) // frame_multiple) * frame_multiple
    y_mask = commons.sequence_mask(y_lengths, t_y).unsqueeze(1).to(x_mask.dtype)  # (B, 1, T_y)
    attn = commons.generate_path(w_ceil, x_mask.unsqueeze(2) * y_mask.unsqueeze(-1))  # (B, 1, T_y, T_x)
    m_p = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)  # (B, C, T_y)
    logs_p = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
    z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * noise_scale
    z = net.flow(z_p, y_mask, g=None, reverse=True)  # (B, C, T_y)
    hop = math.prod(up.stride[0] for up in net.dec.ups)
    dec_dtype = net.dec.conv_pre.weight.dtype  # may differ from the rest (load_synthesizer's decoder_dtype)
    audio = _decode_masked(net.dec, (z * y_mask).to(dec_dtype), y_mask.to(dec_dtype)).float()  # (B, T_y * hop)
    audio = audio * y_mask.squeeze(1).float().repeat_interleave(hop, dim=1)  # conv_post reaches 3 samples past the end
    return VitsOutput(audio, y_lengths * hop, w_ceil.squeeze(1).long() * hop)


@torch.no_grad()
def warm_shapes(net: torch.nn.Module, id_lengths: list[int], frame_lengths: list[int]) -> None:
    """Run the text side (encoder, durations) at each phoneme-id length and the latent side (flow,
    decoder) at each frame length once, batch 1: on CUDA every cuDNN plan those shapes need is made now,
    not during a reply."""
    dev = next(net.parameters()).device
    for n in id_lengths:
        ids = torch.ones(1, n, dtype=torch.long, device=dev)
        x, _, _, x_mask = net.enc_p(ids, torch.tensor([n], device=dev))
        net.dp(x, x_mask, g=None, reverse=True, noise_scale=0.0)
    for t in frame_lengths:
        y_mask = torch.ones(1, 1, t, device=dev)
        z = net.flow(torch.zeros(1, net.dec.conv_pre.in_channels, t, device=dev), y_mask, g=None, reverse=True)
        dec_dtype = net.dec.conv_pre.weight.dtype
        _decode_masked(net.dec, z.to(dec_dtype), y_mask.to(dec_dtype))
