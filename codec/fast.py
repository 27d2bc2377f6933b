"""Fast CPU streaming for the codec: each streaming step is one graph with explicit state.

The torch codec (`codec/model.py`) streams through ~40 `StreamingModule`s that keep their state
as attributes; on one CPU core a 40 ms frame spends much of its time in Python dispatch, weight-
norm cache checks and small-op overhead. Here each half of the codec is one `StepNet`:

    encoder  StepNet(audio (B, 1, T*hop), *states) -> (codes (B, K, T), *new_states)   RVQ included
    decoder  StepNet(latent (B, D, T), *states)    -> (audio (B, 1, T*hop), *new_states)

with weight norm folded into plain weights and every state an input and an output:
  conv            previous inputs       (B, C_in, K_eff - stride)
  transposed conv overlap-add tail      (B, C_out, K - stride), bias removed
  LSTM            h, c                  (B, layers, H) each
The decoder's input latent is the sum of the codebook rows (`dequantize`, numpy, same order of
additions as the torch path). `FastCodec` runs both StepNets in ONNX Runtime (exported in memory
with `torch.onnx`, one intra-op thread by default) or in torch ("torch" backend, the same graph
eagerly), and offers the codec's streaming API (`start_streaming`, `encode`, `decode`,
`reset_streaming(mask)`), so the direct engine's frame clock can use it in place of the codec.
Calls outside streaming go to the torch codec (full pass). Causal-transformer codecs are not
supported (`supports()` says so); they stay on the torch path.
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codec.conv import SConv1d, SConvTranspose1d
from codec.model import ParleyCodec
from codec.seanet import SEANetResnetBlock, SLSTM
from codec.streaming import StreamingSequential

BACKENDS = ("onnx", "torch")


def _plain_weight(conv: nn.Module) -> torch.Tensor:
    """The conv's effective weight (weight norm folded), float32, detached."""
    w = conv._weight() if hasattr(conv, "weight_g") else conv.weight
    return w.detach().float().clone()


class _Conv(nn.Module):
    """Causal conv step: x (B, C_in, T) + previous (B, C_in, P) -> y (B, C_out, T // stride)."""

    def __init__(self, m: SConv1d) -> None:
        super().__init__()
        c = m.conv.conv
        self.register_buffer("w", _plain_weight(c))
        self.register_buffer("b", c.bias.detach().float().clone() if c.bias is not None else None)
        self.stride, self.dilation, self.pad = m.stride, c.dilation[0], m.padding_total
        self.state_shapes = [(c.in_channels, self.pad)] if self.pad else []

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.pad:
            return F.conv1d(x, self.w, self.b, self.stride, 0, self.dilation), []
        xx = torch.cat([st[0], x], dim=-1)  # (B, C_in, P + T)
        new = xx[..., xx.shape[-1] - self.pad :]
        return F.conv1d(xx, self.w, self.b, self.stride, 0, self.dilation), [new]


class _ConvTr(nn.Module):
    """Causal transposed conv step: x (B, C_in, T) + tail (B, C_out, K - s) -> y (B, C_out, T * s)."""

    def __init__(self, m: SConvTranspose1d) -> None:
        super().__init__()
        c = m.convtr.convtr
        self.register_buffer("w", _plain_weight(c))
        self.register_buffer("b", c.bias.detach().float().clone())
        self.stride, self.pt = m.stride, m.padding_total
        self.state_shapes = [(c.out_channels, self.pt)]

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        y = F.conv_transpose1d(x, self.w, self.b, self.stride)  # (B, C_out, (T + 1) * s)
        pt, n = self.pt, y.shape[-1]
        y = torch.cat([y[..., :pt] + st[0], y[..., pt:]], dim=-1)
        return y[..., : n - pt], [y[..., n - pt :] - self.b.view(1, -1, 1)]


class _LSTM(nn.Module):
    """LSTM step with skip: x (B, C, T), h, c (B, L, H) -> y (B, C, T)."""

    def __init__(self, m: SLSTM) -> None:
        super().__init__()
        self.lstm = nn.LSTM(m.lstm.input_size, m.lstm.hidden_size, m.lstm.num_layers)
        self.lstm.load_state_dict(m.lstm.state_dict())
        self.skip = m.skip
        L, H = m.lstm.num_layers, m.lstm.hidden_size
        self.state_shapes = [(L, H), (L, H)]

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        xt = x.permute(2, 0, 1)  # (T, B, C)
        y, (h, c) = self.lstm(xt, (st[0].transpose(0, 1).contiguous(), st[1].transpose(0, 1).contiguous()))
        if self.skip:
            y = y + xt
        return y.permute(1, 2, 0), [h.transpose(0, 1), c.transpose(0, 1)]


class _ELU(nn.Module):
    state_shapes: list = []

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return F.elu(x), []


class _Seq(nn.Module):
    """Steps in sequence; states concatenated in order."""

    def __init__(self, steps: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.state_shapes = [s for m in self.steps for s in m.state_shapes]

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out: list[torch.Tensor] = []
        i = 0
        for m in self.steps:
            n = len(m.state_shapes)
            x, new = m(x, st[i : i + n])
            out += new
            i += n
        return x, out


class _Res(nn.Module):
    """SEANet residual block step: shortcut(x) + block(x)."""

    def __init__(self, m: SEANetResnetBlock) -> None:
        super().__init__()
        self.block = _convert(m.block)
        self.shortcut = _convert(m.shortcut) if not isinstance(m.shortcut, nn.Identity) else None
        sc = self.shortcut.state_shapes if self.shortcut is not None else []
        self.n_sc = len(sc)
        self.state_shapes = sc + self.block.state_shapes

    def forward(self, x: torch.Tensor, st: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s, new_s = self.shortcut(x, st[: self.n_sc]) if self.shortcut is not None else (x, [])
        y, new_b = self.block(x, st[self.n_sc :])
        return s + y, new_s + new_b


def _convert(m: nn.Module) -> nn.Module:
    """A streaming layer of the torch codec -> its step module."""
    if isinstance(m, StreamingSequential):
        return _Seq([_convert(c) for c in m])
    for cls, step in ((SConv1d, _Conv), (SConvTranspose1d, _ConvTr), (SLSTM, _LSTM),
                      (SEANetResnetBlock, _Res)):
        if isinstance(m, cls):
            if isinstance(m, (SConv1d, SConvTranspose1d)) and not m.causal:
                raise ValueError("only causal codecs stream")
            return step(m)
    if isinstance(m, nn.ELU) and m.alpha == 1.0:
        return _ELU()
    raise ValueError(f"no fast streaming step for {type(m).__name__}")


def supports(model: ParleyCodec) -> bool:
    """Whether the fast path can run this codec (causal, zero padding, LSTM or no bottleneck)."""
    try:
        _convert(model.encoder.model)
        _convert(model.decoder.model)
    except ValueError:
        return False
    return model.cfg.pad_mode == "constant" and model.cfg.causal


class StepNet(nn.Module):
    """One streaming step of the encoder (with RVQ: `embeds` given) or of the decoder."""

    def __init__(self, seq: nn.Module, embeds: torch.Tensor | None = None) -> None:
        super().__init__()
        self.seq = _convert(seq)
        self.state_shapes: list[tuple[int, ...]] = list(self.seq.state_shapes)
        self.register_buffer("embeds", embeds.float().clone() if embeds is not None else None)  # (K, N, D)
        self.register_buffer("embeds_sq", embeds.float().pow(2).sum(-1) if embeds is not None else None)

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, new = self.seq(x, list(states))
        if self.embeds is not None:
            y = self._quantize(y)
        return (y, *new)

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, T) -> codes (B, K, T), residual VQ with the torch path's distance formula."""
        B, D, T = z.shape
        residual = z.transpose(1, 2).reshape(-1, D)  # (B*T, D)
        codes = []
        for k in range(self.embeds.shape[0]):
            e = self.embeds[k]
            d = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ e.t() + self.embeds_sq[k][None]
            c = d.argmin(-1)  # (B*T,)
            residual = residual - F.embedding(c, e)
            codes.append(c.view(B, T))
        return torch.stack(codes, 1)


def _onnx_session(net: StepNet, x: torch.Tensor, threads: int):  # noqa: ANN202 - onnxruntime type
    import onnxruntime as ort

    states = [torch.zeros(x.shape[0], *s) for s in net.state_shapes]
    names = [f"s{i}" for i in range(len(states))]
    axes = {"x": {0: "B", 2: "T"}, "y": {0: "B", 2: "T"}, **{n: {0: "B"} for n in names},
            **{f"new_{n}": {0: "B"} for n in names}}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(net, (x, *states), buf, input_names=["x", *names],
                          output_names=["y", *[f"new_{n}" for n in names]], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


class FastCodec:
    """The codec's streaming API on CPU through two `StepNet`s (ONNX Runtime or torch).

    Outside `streaming()` (or `start_streaming`) `encode` / `decode` are the torch codec's full
    pass. Inputs and outputs are torch tensors as for `ParleyCodec`.
    """

    def __init__(self, model: ParleyCodec, backend: str = "onnx", threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown fast-codec backend {backend!r} ({', '.join(BACKENDS)})")
        if not supports(model):
            raise ValueError("the fast path streams causal SEANet codecs with LSTM or no bottleneck only")
        self.model, self.backend, self.cfg = model.eval(), backend, model.cfg
        self.hop_length, self.sample_rate, self.frame_rate = model.hop_length, model.sample_rate, model.frame_rate
        layers = model.quantizer.vq.layers
        embeds = torch.stack([l._codebook.embed.detach().float() for l in layers])  # (K, N, D)
        self.embeds = embeds.numpy().copy()
        with torch.no_grad():
            self.enc = StepNet(model.encoder.model, embeds).eval()
            self.dec = StepNet(model.decoder.model).eval()
        self._enc_run = self._dec_run = None
        if backend == "onnx":
            self._enc_run = _onnx_session(self.enc, torch.zeros(1, 1, self.hop_length), threads)
            self._dec_run = _onnx_session(self.dec, torch.zeros(1, self.cfg.dimension, 1), threads)
        self._enc_st: list[np.ndarray] | None = None
        self._dec_st: list[np.ndarray] | None = None

    # --- the codec's streaming API ------------------------------------------------------------
    @property
    def is_streaming(self) -> bool:
        return self._enc_st is not None

    def start_streaming(self, batch_size: int) -> None:
        self._enc_st = [np.zeros((batch_size, *s), np.float32) for s in self.enc.state_shapes]
        self._dec_st = [np.zeros((batch_size, *s), np.float32) for s in self.dec.state_shapes]

    def stop_streaming(self) -> None:
        self._enc_st = self._dec_st = None

    @contextlib.contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        self.start_streaming(batch_size)
        try:
            yield
        finally:
            self.stop_streaming()

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        """Restart the streams where `mask` (B,) bool is True (all when None)."""
        if self._enc_st is None or self._dec_st is None:
            raise RuntimeError("reset_streaming() called outside `with codec.streaming(...)`")
        rows = slice(None) if mask is None else np.asarray(torch.as_tensor(mask).cpu(), dtype=bool)
        for s in self._enc_st + self._dec_st:
            s[rows] = 0.0

    def to(self, device: str | torch.device) -> "FastCodec":
        if torch.device(device).type != "cpu":
            raise ValueError("FastCodec runs on the CPU; use the torch codec on a GPU")
        return self

    def eval(self) -> "FastCodec":
        return self

    # --- encode / decode ----------------------------------------------------------------------
    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """wav (B, T) or (B, 1, T), T a multiple of hop when streaming -> codes (B, K, T // hop)."""
        if self._enc_st is None:
            return self.model.encode(wav, n_q)
        x = self.model._pad_full(self.model._as_3d(wav))
        codes, self._enc_st = self._run(self.enc, self._enc_run, x, self._enc_st)
        return torch.from_numpy(codes[:, : n_q or codes.shape[1]])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K<=n_q, T) -> wav (B, 1, T * hop)."""
        if self._dec_st is None:
            return self.model.decode(codes)
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.cfg.n_q:
            raise ValueError(f"codes should be [B, K<={self.cfg.n_q}, T], got {tuple(codes.shape)}")
        z = self.dequantize(codes.cpu().numpy())
        wav, self._dec_st = self._run(self.dec, self._dec_run, torch.from_numpy(z), self._dec_st)
        return torch.from_numpy(wav)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """codes (B, K, T) int -> latent (B, D, T) float32: codebook rows summed level by level."""
        if codes.size and (codes.min() < 0 or codes.max() >= self.cfg.bins):
            raise ValueError(f"code values must be in [0, {self.cfg.bins})")
        q = self.embeds[0][codes[:, 0]]  # (B, T, D)
        for k in range(1, codes.shape[1]):
            q = q + self.embeds[k][codes[:, k]]
        return np.ascontiguousarray(q.transpose(0, 2, 1))

    def _run(self, net: StepNet, sess, x: torch.Tensor,  # noqa: ANN001 - onnxruntime session
             states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        if sess is not None:
            feeds = {"x": np.ascontiguousarray(x.detach().cpu().float().numpy())}
            feeds.update({f"s{i}": s for i, s in enumerate(states)})
            y, *new = sess.run(None, feeds)
            return y, new
        with torch.inference_mode(), _no_mkldnn():
            y, *new = net(x.float(), *[torch.from_numpy(s) for s in states])
        return y.numpy(), [s.contiguous().numpy() for s in new]


@contextlib.contextmanager
def _no_mkldnn() -> Iterator[None]:
    prev = torch.backends.mkldnn.enabled
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(prev)
