"""Fast CPU streaming for the codec: ONNX Runtime runs one streaming step with explicit state.

The torch codec (`codec/model.py`) streams through ~40 `StreamingModule`s that keep their state as
attributes; on one CPU core a 40 ms frame then spends most of its time in per-op dispatch and
small-op overhead (`parley bench codec`: ~2.5x slower than this path). `FastCodec` runs each half
of the codec as one `StepNet` graph (`codec/fast_step.py`: weight norm folded, every state an input
and an output) in ONNX Runtime (exported in memory with `torch.onnx`, one intra-op thread by
default), or eagerly in torch (backend "torch", for comparison). The decoder's input latent is the
sum of the codebook rows (`dequantize`, numpy, in the torch path's order of additions).

It offers the codec's streaming API (`start_streaming`, `encode`, `decode`, `reset_streaming(mask)`,
`streaming()`), so the direct engine's frame clock uses it in place of the codec on CPU; outside
streaming, `encode` / `decode` are the torch codec's full pass. Codes equal the torch streaming
path's and audio differs by float rounding (tests/test_codec_fast.py). Non-causal codecs and
reflect padding (EnCodec's) are not supported (`supports()`): they stay on the torch path.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from enum import Enum
from typing import Any, Iterator

import numpy as np
import torch

from codec.fast_step import StepNet, supports_step
from codec.model import ParleyCodec, no_mkldnn


class Backend(str, Enum):
    """What runs the step graphs."""

    ONNX = "onnx"  # ONNX Runtime, CPU (the fast path)
    TORCH = "torch"  # the same graphs eagerly in torch (for comparison and tests)


def supports(model: ParleyCodec) -> bool:
    """Whether the fast path can stream this codec (causal, zero padding: Parley's configs)."""
    return supports_step(model.encoder.model) and supports_step(model.decoder.model)


def export_onnx(net: StepNet, example: torch.Tensor) -> bytes:
    """`net` as an ONNX model (opset 17) with dynamic batch `B` and input length `T_in`."""
    states = [torch.zeros(example.shape[0], *s, dtype=d) for s, d in zip(net.state_shapes, net.state_dtypes)]
    names = [f"s{i}" for i in range(len(states))]
    axes = {"x": {0: "B", 2: "T_in"}, "y": {0: "B", 2: "T_out"}, **{n: {0: "B"} for n in names},
            **{f"new_{n}": {0: "B"} for n in names}}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():  # tracer / LSTM-batch warnings: states are inputs
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example, *states), buf, input_names=["x", *names],
                          output_names=["y", *[f"new_{n}" for n in names]], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def onnx_session(model: bytes, batch: int | None = None, length: int | None = None, threads: int = 1) -> Any:
    """An onnxruntime CPU session; `batch` / `length` fix the dynamic dimensions (static shapes
    let ONNX Runtime fold the shape arithmetic: 6-12 % faster per frame here)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if batch is not None:
        so.add_free_dimension_override_by_name("B", batch)
    if length is not None:
        so.add_free_dimension_override_by_name("T_in", length)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class FastCodec:
    """The codec's streaming API on CPU through two `StepNet`s (ONNX Runtime or torch).

    Outside `streaming()` (or `start_streaming`) `encode` / `decode` are the torch codec's full
    pass. Inputs and outputs are torch tensors as for `ParleyCodec`.
    """

    def __init__(self, model: ParleyCodec, backend: Backend | str = Backend.ONNX, threads: int = 1) -> None:
        backend = Backend(backend)  # ValueError for an unknown name
        if not supports(model):
            raise ValueError("the fast path streams causal zero-padded SEANet codecs (LSTM or none) only")
        self.model, self.backend, self.cfg = model.eval(), backend, model.cfg
        self.hop_length, self.sample_rate, self.frame_rate = model.hop_length, model.sample_rate, model.frame_rate
        layers = model.quantizer.vq.layers
        embeds = torch.stack([l._codebook.embed.detach().float() for l in layers])  # (K, N, D)
        self.embeds = embeds.numpy().copy()
        with torch.no_grad():
            self.enc = StepNet(model.encoder.model, embeds).eval()
            self.dec = StepNet(model.decoder.model).eval()
        self.threads = threads
        self._onnx: dict[str, bytes] = {}  # "enc" / "dec" -> ONNX model
        self._sessions: dict[tuple[str, int, int], Any] = {}  # (half, batch, input length)
        if backend is Backend.ONNX:
            self._onnx = {"enc": export_onnx(self.enc, torch.zeros(1, 1, self.hop_length)),
                          "dec": export_onnx(self.dec, torch.zeros(1, self.cfg.dimension, 1))}
        self._enc_st: list[np.ndarray] | None = None
        self._dec_st: list[np.ndarray] | None = None

    # --- the codec's streaming API ------------------------------------------------------------
    @property
    def is_streaming(self) -> bool:
        return self._enc_st is not None

    def start_streaming(self, batch_size: int) -> None:
        """Zero states for `batch_size` streams; the one-frame sessions are built now (~0.3 s), not
        at the first frame."""
        self._enc_st = _zeros(self.enc, batch_size)
        self._dec_st = _zeros(self.dec, batch_size)
        if self.backend is Backend.ONNX:
            self.session("enc", batch_size, self.hop_length)
            self.session("dec", batch_size, 1)

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
        x = self.model._as_3d(wav)
        self._check_batch(x.shape[0], self._enc_st)
        if x.shape[-1] % self.hop_length:
            raise ValueError(f"streaming chunks must be a multiple of {self.hop_length} samples, got {x.shape[-1]}")
        if x.shape[-1] == 0:
            return torch.zeros(x.shape[0], n_q or self.cfg.n_q, 0, dtype=torch.long)
        codes, self._enc_st = self._run("enc", x, self._enc_st)
        return torch.from_numpy(codes[:, : n_q or codes.shape[1]])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K<=n_q, T) -> wav (B, 1, T * hop)."""
        if self._dec_st is None:
            return self.model.decode(codes)
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.cfg.n_q:
            raise ValueError(f"codes should be [B, K<={self.cfg.n_q}, T], got {tuple(codes.shape)}")
        self._check_batch(codes.shape[0], self._dec_st)
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], self.cfg.channels, 0)
        z = self.dequantize(codes.cpu().numpy())
        wav, self._dec_st = self._run("dec", torch.from_numpy(z), self._dec_st)
        return torch.from_numpy(wav)

    @staticmethod
    def _check_batch(batch: int, states: list[np.ndarray]) -> None:
        if states and states[0].shape[0] != batch:
            raise ValueError(f"batch of {batch} rows, but streaming was started for {states[0].shape[0]}")

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """codes (B, K, T) int -> latent (B, D, T) float32: codebook rows summed level by level."""
        if codes.size and (codes.min() < 0 or codes.max() >= self.cfg.bins):
            raise ValueError(f"code values must be in [0, {self.cfg.bins})")
        q = self.embeds[0][codes[:, 0]]  # (B, T, D)
        for k in range(1, codes.shape[1]):
            q = q + self.embeds[k][codes[:, k]]
        return np.ascontiguousarray(q.transpose(0, 2, 1))

    def session(self, half: str, batch: int, length: int) -> Any:
        """The ONNX Runtime session of `half` ("enc" / "dec") for inputs (batch, C, length)."""
        key = (half, batch, length)
        if key not in self._sessions:
            self._sessions[key] = onnx_session(self._onnx[half], batch, length, self.threads)
        return self._sessions[key]

    def _run(self, half: str, x: torch.Tensor, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.backend is Backend.ONNX:
            feeds = {"x": np.ascontiguousarray(x.detach().cpu().float().numpy())}
            feeds.update({f"s{i}": s for i, s in enumerate(states)})
            y, *new = self.session(half, x.shape[0], x.shape[-1]).run(None, feeds)
            return y, new
        net = self.enc if half == "enc" else self.dec
        with torch.inference_mode(), no_mkldnn():
            y, *new = net(x.float(), *[torch.from_numpy(s) for s in states])
        return np.ascontiguousarray(y.numpy()), [s.contiguous().numpy() for s in new]


def _zeros(net: StepNet, batch: int) -> list[np.ndarray]:
    """A fresh stream's states (all zero, as the torch path's `State.reset`)."""
    return [np.zeros((batch, *s), np.int64 if d == torch.int64 else np.float32)
            for s, d in zip(net.state_shapes, net.state_dtypes)]
