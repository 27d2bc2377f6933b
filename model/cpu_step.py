"""The direct speech model's per-frame step on a CPU at batch 1-2: fused, 4/8-bit weights.

The generator's reference step (``SpeechGenerator._step_impl``) runs the modules of
``model/speech.py`` eagerly: ~3,000 small torch ops per frame for 30 backbone layers, 8 depth
passes that each re-run their growing prefix, and bf16 matrix-vector products over 270 MB of
weights: 54-61 ms per 40 ms frame on this 2-core CPU (1 thread; profile in model/README.md). This
module computes the same step from the same weights, packed once (``CpuStep.QUANT``, the default
of the direct engine on CPU: ~18 ms):

- **the backbone in int4, losslessly**: its matrices come from the GGUF's Q4_1 blocks (16 levels
  per 32 inputs), which ``torch.ops.aten._weight_int4pack_mm_for_cpu`` (group 32, a scale and a
  zero per group) holds exactly, up to bf16 scales; the LoRA adapters stay apart as two thin fp32
  products (merged, they would leave the grid). A matrix that is not on such a grid (random or
  fully fine-tuned weights) falls back to int8.
- **the rest in int8** per output row (``torch._weight_int8pack_mm``: the tied text head + the
  PAD row, the depth transformer's input projections, layers and 8 codebook heads): absmax scales.
  (Both are the aten CPU kernels behind torch's weight-only quantization; torchao's eager int8
  path dequantizes the whole matrix per call on CPU and was slower than bf16 here.)
- **fewer ops**: one product for q|k|v and one for gate|up, RMSNorm weights folded into the next
  product (int8/bf16) so the norm is one scalar per row, RoPE by a flip, the residual stream and
  the KV cache in fp32 (one fp32 SDPA call per layer, no per-layer cache conversion), one additive
  mask per frame, and a depth transformer that decodes incrementally (a K-slot key/value buffer per
  layer: 8 positions per frame instead of 36) with the h_t projections of all K codebooks in one
  product.

``CpuStep.FAST`` is the same code with bf16 weights (to tell the two gains apart). Sampling is the
reference's (``sample_batch``: same temperatures, top-k, Gumbel-max), so only the logits differ
(tests/test_s2s_cpu_step.py: on the real weights as close to the fp32 model as the exact bf16
step). The cache is the backbone's ``KVCache`` (``setup_cache``: ring, per-row reset), in fp32.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.depth import DepthTransformer
from model.lora import LoRALinear
from model.speech import SpeechModel
from model.speech_sampling import SpeechSamplingParams, sample_batch


class CpuStep(str, enum.Enum):
    """How a SpeechGenerator on a CPU computes a frame."""

    EXACT = "exact"  # the reference step: the model's modules, eager, in the generator's dtype
    FAST = "fast"  # this module's fused step, bf16 weights
    QUANT = "quant"  # this module's fused step, 4/8-bit weights (default on CPU)


INT4_GROUP = 32  # int4 weights: one scale and zero per 32 inputs (GGUF Q4_1's block)


def _base_and_lora(lin: nn.Module) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """An nn.Linear or LoRALinear -> (base weight (out, in), (A (r, in), scale * B (out, r)) or None),
    fp32; a merged adapter is taken back out of the base (merge_lora added it in fp32)."""
    if not isinstance(lin, LoRALinear):
        return lin.weight.detach().float(), None
    a, b = lin.lora_a.detach().float(), lin.lora_b.detach().float() * lin.scale
    base = lin.base.weight.detach().float()
    return (base - b @ a if lin.merged else base), (a, b)


def _weight(lin: nn.Module) -> torch.Tensor:
    """The effective weight (out, in) fp32 of an nn.Linear or a LoRALinear (adapter folded in)."""
    base, lora = _base_and_lora(lin)
    return base if lora is None else base + lora[1] @ lora[0]


def _int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """w (out, in) -> (packed uint8, scales and zeros (in / 32, out, 2) bf16) for
    ``_weight_int4pack_mm_for_cpu`` (w = (q - 8) * s + z), or None when w is not already on a 4-bit
    grid per group (only then is int4 lossless: the GGUF's Q4_1 backbone, adapters kept apart)."""
    out, n_in = w.shape
    if n_in % INT4_GROUP:
        return None
    g = w.view(out, n_in // INT4_GROUP, INT4_GROUP)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    s = ((hi - lo) / 15).clamp(min=1e-12).to(torch.bfloat16).float()
    z = (lo + 8 * s).to(torch.bfloat16).float()
    q = torch.round((g - z) / s + 8).clamp(0, 15)
    if float(((q - 8) * s + z - g).abs().div(s).amax()) > 0.1:  # off the grid: int4 would lose precision
        return None
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.view(out, n_in).to(torch.int32).contiguous(), 1)
    sz = torch.stack([s[..., 0].t(), z[..., 0].t()], -1).to(torch.bfloat16).contiguous()  # (groups, out, 2)
    return packed, sz


class PackedLinear:
    """y = x @ W.T for x (M, in) bf16 -> (M, out) bf16, W stored as one of:

    - int4 per group of 32 inputs, when the base weight is already on such a grid (the Q4_1
      backbone: exact up to bf16 scales), its LoRA adapter kept apart as two thin products;
    - int8 per output row (absmax scale), adapters folded in;
    - bf16 (``quant=False``).

    ``in_scale`` (in,) is an RMSNorm weight before the product: folded into W's columns (int8,
    bf16), or multiplied into x (int4, whose grid a folded weight would leave); either way the
    norm reduces to one scalar per row of x, applied after the product (``rms_mm``).
    ``mods``: Linears sharing the input, stacked along the output (q|k|v, gate|up)."""

    def __init__(self, mods: list[nn.Module] | torch.Tensor, quant: bool, in_scale: torch.Tensor | None = None) -> None:
        parts = [(mods.detach().float(), None)] if isinstance(mods, torch.Tensor) else [_base_and_lora(m) for m in mods]
        base = torch.cat([p[0] for p in parts])
        loras = [p[1] for p in parts]
        self.in_mul: torch.Tensor | None = None
        self.lora: tuple[torch.Tensor, torch.Tensor] | None = None
        self.int4 = _int4(base) if quant else None
        self.scale: torch.Tensor | None = None
        if self.int4 is not None:
            self.in_mul = None if in_scale is None else in_scale.detach().float()
            if any(lo is not None for lo in loras):
                outs = [p[0].shape[0] for p in parts]
                a = torch.cat([lo[0] if lo else torch.zeros(0, base.shape[1]) for lo in loras])
                b = torch.block_diag(*[lo[1] if lo else torch.zeros(o, 0) for lo, o in zip(loras, outs)])
                self.lora = (a.contiguous(), b.t().contiguous())  # fp32: thin bf16 products are slow on CPU
            return
        w = torch.cat([p[0] if lo is None else p[0] + lo[1] @ lo[0] for p, lo in zip(parts, loras)])
        if in_scale is not None:
            w = w * in_scale.detach().float()[None, :]
        if quant:
            self.scale = (w.abs().amax(1) / 127.0).clamp(min=1e-12).to(torch.bfloat16)  # (out,)
            q = torch.round(w / self.scale.float()[:, None]).clamp(-127, 127)  # the bf16 scale dequantizes it
            self.w = q.to(torch.int8).contiguous()
        else:
            self.w = w.to(torch.bfloat16).contiguous()

    @property
    def kind(self) -> str:
        return "int4" if self.int4 is not None else "int8" if self.scale is not None else "bf16"

    def nbytes(self) -> int:
        """Bytes read per product (weights, scales, adapter)."""
        ts = [*(self.int4 or (self.w,)), *(self.lora or ()), *([self.scale] if self.scale is not None else [])]
        return sum(t.numel() * t.element_size() for t in ts)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, in) fp32 or bf16 (times ``in_mul`` first, when set) -> (M, out) bf16, or fp32
        when a LoRA adapter is added (in fp32, from x as given)."""
        if self.in_mul is not None:
            x = x * self.in_mul
        xb = x.to(torch.bfloat16)
        if self.int4 is not None:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, self.int4[0], INT4_GROUP, self.int4[1])
            return y if self.lora is None else torch.addmm(y.float(), F.linear(x.float(), self.lora[0]), self.lora[1])
        if self.scale is None:
            return F.linear(xb, self.w)
        return torch._weight_int8pack_mm(xb, self.w, self.scale)


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x (M, D) fp32 -> 1 / rms(x) (M, 1): RMSNorm without its weight (folded into the product)."""
    return x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()


def rms_mm(x: torch.Tensor, lin: PackedLinear, eps: float) -> torch.Tensor:
    """lin(RMSNorm(x)) for x (M, D) fp32, the norm's weight in lin -> (M, out) fp32."""
    return lin(x) * rms_scale(x, eps)


class _Layer:
    """One backbone block, packed."""

    def __init__(self, blk: nn.Module, quant: bool) -> None:
        a, f = blk.attention, blk.feed_forward
        an, fn = blk.attention_norm.weight, blk.ffn_norm.weight
        self.wqkv = PackedLinear([a.wq, a.wk, a.wv], quant, an)
        self.wo = PackedLinear([a.wo], quant)
        self.w13 = PackedLinear([f.w1, f.w3], quant, fn)
        self.w2 = PackedLinear([f.w2], quant)


class _DepthLayer:
    def __init__(self, blk: nn.Module, quant: bool) -> None:
        self.qkv = PackedLinear([blk.qkv], quant, blk.attn_norm.weight)
        self.out = PackedLinear([blk.out], quant)
        self.gate_up = PackedLinear([blk.gate_up], quant, blk.ffn_norm.weight)
        self.down = PackedLinear([blk.down], quant)


class FusedCpuStep:
    """The per-frame step of a depth-head SpeechModel, packed for the CPU (see the module doc)."""

    def __init__(self, model: SpeechModel, quant: bool = True) -> None:
        if not isinstance(model.depth, DepthTransformer):
            raise ValueError("the fused CPU step needs the depth-transformer audio head (--audio-head depth)")
        cfg, bb, d = model.cfg, model.backbone, model.depth
        self.model, self.layout, self.quant = model, cfg.layout, quant
        c = cfg.backbone
        self.nh, self.nkv, self.hd, self.eps = c.n_heads, c.n_kv_heads, c.head_dim, c.norm_eps
        self.inv_freq = c.rope_theta ** (-torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd)
        # input: both codebook tables in one lookup, both projections in one product
        ue, ae = model.user_emb, model.agent_emb
        self.emb_table = torch.cat([ue.table.detach().float().flatten(0, 1), ae.table.detach().float().flatten(0, 1)])
        vu, va = ue.table.shape[1], ae.table.shape[1]
        K = self.K = d.n_q
        self.emb_offsets = torch.cat([torch.arange(K) * vu, K * vu + torch.arange(K) * va])  # (2K,)
        self.emb_proj = torch.cat([_weight(ue.proj), _weight(ae.proj)], dim=1)  # (D, 2e)
        self.layers = [_Layer(blk, quant) for blk in bb.layers]
        # h_t = norm(x): its weight is folded into the two products that read h_t
        fn = bb.norm.weight
        pad = _weight(model.text_special_head)  # the PAD logit's row; BOS gets a zero row (masked)
        self.text_head = PackedLinear(torch.cat([_weight(bb.output), pad, torch.zeros_like(pad)]), quant, fn)
        self.card, self.dd, self.dh, self.deps = d.card, d.cfg.dim, d.cfg.n_heads, d.cfg.norm_eps
        self.in_proj = PackedLinear(d.in_proj.detach().float().reshape(K * self.dd, -1), quant, fn)  # P_0..P_K-1
        self.text_proj = PackedLinear([d.text_proj], quant)
        self.code_emb = [e.weight.detach().float() for e in d.code_emb]  # E_k (card + 1, dim)
        self.pos = d.pos.detach().float()  # (K, dim)
        self.dlayers = [_DepthLayer(blk, quant) for blk in d.blocks]
        self.heads = [PackedLinear(d.head(k), quant, d.norm.weight) for k in range(K)]

    def packed(self) -> list[PackedLinear]:
        ls = [p for L in self.layers + self.dlayers for p in vars(L).values() if isinstance(p, PackedLinear)]
        return ls + [self.text_head, self.in_proj, self.text_proj, *self.heads]

    def nbytes(self) -> int:
        """Bytes of the packed matrices (all read once per frame)."""
        return sum(p.nbytes() for p in self.packed())

    def storage(self) -> str:
        """How the matrices are stored, e.g. 'int4 x120 + int8 x23'."""
        kinds = collections.Counter(p.kind for p in self.packed())
        return " + ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))

    def embed(self, user: torch.Tensor, agent_prev: torch.Tensor, text_prev: torch.Tensor) -> torch.Tensor:
        """user, agent_prev (B, K), text_prev (B,) -> input embeddings (B, D) fp32."""
        B = user.shape[0]
        e = F.embedding(torch.cat([user, agent_prev], 1) + self.emb_offsets, self.emb_table)  # (B, 2K, e)
        x = F.linear(e.view(B, 2, self.K, -1).sum(2).view(B, -1), self.emb_proj)
        return x + self.model.embed_text(text_prev).float()

    # --- the temporal transformer ---------------------------------------------------------------
    def backbone(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, D) fp32 input embeddings at positions pos (B,) -> the last residual (B, D) fp32
        (before the final norm). Writes this frame's keys/values into the cache."""
        B, nh, nkv, hd = x.shape[0], self.nh, self.nkv, self.hd
        cache = self.model.backbone.cache  # the generator's (setup_cache), float32
        if cache is None or cache.k.dtype != torch.float32:
            raise ValueError("the fused CPU step needs a float32 cache on the backbone (setup_cache)")
        positions = pos[:, None]  # (B, 1)
        kv_len = int(pos.max()) + 1  # attend to the used prefix of the cache only
        if cache.ring:
            kv_len = min(kv_len, cache.max_len)
        elif kv_len > cache.max_len:
            raise ValueError(f"position {kv_len - 1} beyond the cache length {cache.max_len}")
        cache.mark(positions)
        mask = torch.zeros(B, 1, 1, kv_len).masked_fill_(~cache.attn_mask(positions, kv_len), float("-inf"))
        slots, rows = cache.slots(pos), torch.arange(B)
        ang = pos.float()[:, None] * self.inv_freq  # (B, hd/2)
        cos = torch.cat([ang, ang], -1).cos()[:, None]  # (B, 1, hd)
        s = ang.sin()
        sin = torch.cat([-s, s], -1)[:, None]  # rotate_half(x) * sin == (x's halves swapped) * this
        g = nh + nkv  # heads that RoPE turns (q and k)
        for i, L in enumerate(self.layers):
            qkv = rms_mm(x, L.wqkv, self.eps).view(B, nh + 2 * nkv, hd)
            qk = qkv[:, :g] * cos + qkv[:, :g].view(B, g, 2, hd // 2).flip(2).view(B, g, hd) * sin
            kc, vc = cache.k[i], cache.v[i]  # (B, nkv, T_max, hd)
            kc.permute(0, 2, 1, 3).index_put_((rows, slots), qk[:, nh:])
            vc.permute(0, 2, 1, 3).index_put_((rows, slots), qkv[:, g:])
            y = F.scaled_dot_product_attention(qk[:, :nh, None], kc[:, :, :kv_len], vc[:, :, :kv_len],
                                               attn_mask=mask, enable_gqa=True)  # (B, nh, 1, hd)
            x = x + L.wo(y.view(B, nh * hd))
            gu = rms_mm(x, L.w13, self.eps).view(B, 2, -1)
            x = x + L.w2(F.silu(gu[:, 0]) * gu[:, 1])
        return x

    # --- the depth transformer, incremental ---------------------------------------------------------
    def depth(self, hp: torch.Tensor, text_emb: torch.Tensor, pick: Callable[[torch.Tensor, int], torch.Tensor]
              ) -> torch.Tensor:
        """hp (B, K, dim) fp32: P_k h_t; text_emb (B, D) bf16; pick(logits (B, card) fp32, k) -> codes
        (B,) of codebook k (the input of position k + 1) -> codes (B, K)."""
        B, K, dim, H = hp.shape[0], self.K, self.dd, self.dh
        hd = dim // H
        hp = hp + self.pos
        kb = torch.empty(len(self.dlayers), B, H, K, hd)  # keys/values of this frame's positions
        vb = torch.empty_like(kb)
        codes = torch.empty((B, K), dtype=torch.long)
        x_in = self.text_proj(text_emb)  # position 0 reads the text token
        for k in range(K):
            if k:
                x_in = F.embedding(codes[:, k - 1], self.code_emb[k - 1])  # position k reads codebook k-1
            x = hp[:, k] + x_in  # (B, dim) fp32
            for j, L in enumerate(self.dlayers):
                qkv = rms_mm(x, L.qkv, self.deps).view(B, 3, H, hd)
                kb[j, :, :, k] = qkv[:, 1]
                vb[j, :, :, k] = qkv[:, 2]
                y = F.scaled_dot_product_attention(qkv[:, 0, :, None], kb[j, :, :, : k + 1], vb[j, :, :, : k + 1])
                x = x + L.out(y.view(B, dim))
                gu = rms_mm(x, L.gate_up, self.deps).view(B, 2, -1)
                x = x + L.down(F.silu(gu[:, 0]) * gu[:, 1])
            codes[:, k] = pick(rms_mm(x, self.heads[k], self.deps), k)
        return codes

    # --- one frame -----------------------------------------------------------------------------
    def _frame(self, user: torch.Tensor, agent_prev: torch.Tensor, text_prev: torch.Tensor, pos: torch.Tensor,
               pick_text: Callable[[torch.Tensor], torch.Tensor],
               pick_code: Callable[[torch.Tensor, int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.backbone(self.embed(user, agent_prev, text_prev), pos)
        r, xb = rms_scale(x, self.eps), x.to(torch.bfloat16)  # h_t = norm(x): r * x (weight folded in)
        tl = self.text_head(xb) * r  # (B, text_vocab): real tokens, PAD, BOS
        tl[:, self.layout.text_bos] = float("-inf")
        text = pick_text(tl)
        hp = (self.in_proj(xb) * r).view(x.shape[0], self.K, self.dd)
        return text, self.depth(hp, self.model.embed_text(text).to(torch.bfloat16), pick_code)

    @torch.no_grad()
    def step(self, user: torch.Tensor, agent_prev: torch.Tensor, text_prev: torch.Tensor, pos: torch.Tensor,
             delays: torch.Tensor, sc: SpeechSamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        """user, agent_prev (B, K), text_prev (B,), pos (B,) -> text (B,), codes (B, K): the
        generator's reference step (which see), sampled the same way."""
        init = self.layout.audio_init

        def pick_code(logits: torch.Tensor, k: int) -> torch.Tensor:
            return torch.where(pos < delays[k], init, sample_batch(logits, sc.audio_temperature, sc.audio_top_k))

        return self._frame(user, agent_prev, text_prev, pos,
                           lambda tl: sample_batch(tl, sc.text_temperature, sc.text_top_k), pick_code)

    @torch.no_grad()
    def forced_logits(self, user: torch.Tensor, agent_prev: torch.Tensor, text_prev: torch.Tensor,
                      pos: torch.Tensor, text: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing (tests): the logits of one frame given its text (B,) and codes (B, K) ->
        text logits (B, text_vocab), audio logits (B, K, card), both fp32; advances the cache."""
        audio: list[torch.Tensor] = []
        text_logits: list[torch.Tensor] = []

        def pick_code(logits: torch.Tensor, k: int) -> torch.Tensor:
            audio.append(logits.float())
            return codes[:, k]

        def pick_text(tl: torch.Tensor) -> torch.Tensor:
            text_logits.append(tl.float())
            return text

        self._frame(user, agent_prev, text_prev, pos, pick_text, pick_code)
        return text_logits[0], torch.stack(audio, 1)
