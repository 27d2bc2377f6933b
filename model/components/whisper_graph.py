"""Whisper's greedy decoding with a static self-attention cache: one CUDA graph per decoder step.

`whisper.decode` grows its key/value cache with `torch.cat` in forward hooks and runs every step's ~100
kernels from Python: 73 ms p50 for a spoken question with tiny.en on an H200 (`parley bench judge`,
2026-12-03), almost all launch overhead. Here the cache is a fixed (B, n_ctx, D) buffer per layer written
at the step's position, the cross-attention keys / values are computed once, and a step (embedding ->
4 blocks -> logits -> the library's own token suppression -> argmax) is one graph replay on CUDA (eager on
CPU: the same arithmetic, for tests). Greedy results equal `whisper.decode`'s: the same text, the same
`no_speech_prob` (softmax at the start token) and `avg_logprob` (tests/test_whisper_graph.py).

    dec = StaticGreedy(model, options)      # a whisper.model.Whisper (eval) and whisper.DecodingOptions
    results = dec.decode(mel)               # (B, 80, 3000) -> [(text, avg_logprob, no_speech_prob)]
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from model.common.cuda_graph import capture

BATCHES = (1, 2, 4, 8, 16)  # batch sizes with a graph (a batch is padded up to one of them)


class StaticGreedy:
    def __init__(self, model, options, graphs: bool | None = None) -> None:  # noqa: ANN001 - Whisper, DecodingOptions
        from whisper.decoding import DecodingTask, SuppressBlank  # noqa: PLC0415

        self.model, self.options = model, options
        task = DecodingTask(model, options)  # the library's tokens and filters for these options
        self.tok = task.tokenizer
        self.initial = list(task.initial_tokens)
        self.sot_index, self.sample_len = task.sot_index, task.sample_len
        dev = next(model.parameters()).device
        self.device, self.dtype = dev, torch.float16 if options.fp16 else torch.float32
        v = model.dims.n_vocab
        zeros = torch.zeros(1, v, device=dev)
        tokens = torch.tensor([self.initial], device=dev)
        rest = zeros.clone()  # every step: the library's filters but SuppressBlank (first step only)
        first = zeros.clone()
        for f in task.logit_filters:
            f.apply(first, tokens)
            if not isinstance(f, SuppressBlank):
                f.apply(rest, tokens)
        # (1, V): 0 or -inf; the first step's as -1e30 (it is scaled by 0.0 / 1.0 inside the graph)
        self.mask_rest, self.mask_first = rest, first.nan_to_num(neginf=-1e30)
        self.graphs_on = dev.type == "cuda" if graphs is None else graphs
        self.buffers: dict[int, dict] = {}
        self.lock = threading.Lock()

    # --- one step, static shapes -----------------------------------------------------------
    def _alloc(self, b: int) -> dict:
        d, dev = self.model.dims, self.device
        n_layer, D, n_ctx = d.n_text_layer, d.n_text_state, d.n_text_ctx
        return {"tok": torch.zeros(b, 1, dtype=torch.long, device=dev),
                "pos": torch.zeros(1, dtype=torch.long, device=dev),
                "first": torch.zeros(1, 1, device=dev),  # 1.0 on the first sampled step
                "k": torch.zeros(n_layer, b, n_ctx, D, dtype=self.dtype, device=dev),
                "v": torch.zeros(n_layer, b, n_ctx, D, dtype=self.dtype, device=dev),
                "xk": torch.zeros(n_layer, b, d.n_audio_ctx, D, dtype=self.dtype, device=dev),
                "xv": torch.zeros(n_layer, b, d.n_audio_ctx, D, dtype=self.dtype, device=dev),
                "ctx": torch.arange(n_ctx, device=dev)}

    def _step(self, s: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits (B, V) float32 before filtering, logprobs (B, V) after): writes the cache at s["pos"]."""
        dec = self.model.decoder
        h = self.model.dims.n_text_head
        x = (dec.token_embedding(s["tok"]) + dec.positional_embedding[s["pos"]]).to(self.dtype)  # (B, 1, D)
        B = x.shape[0]
        mask = torch.where(s["ctx"] <= s["pos"], 0.0, float("-inf")).to(self.dtype)[None, :]  # (1, n_ctx)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, h, T, D/h)
            return t.view(B, t.shape[1], h, -1).transpose(1, 2)

        for i, blk in enumerate(dec.blocks):
            a = blk.attn_ln(x)
            s["k"][i].index_copy_(1, s["pos"], blk.attn.key(a))
            s["v"][i].index_copy_(1, s["pos"], blk.attn.value(a))
            y = F.scaled_dot_product_attention(heads(blk.attn.query(a)), heads(s["k"][i]), heads(s["v"][i]),
                                               attn_mask=mask)
            x = x + blk.attn.out(y.transpose(1, 2).flatten(2))
            a = blk.cross_attn_ln(x)
            y = F.scaled_dot_product_attention(heads(blk.cross_attn.query(a)), heads(s["xk"][i]), heads(s["xv"][i]))
            x = x + blk.cross_attn.out(y.transpose(1, 2).flatten(2))
            x = x + blk.mlp(blk.mlp_ln(x))
        x = dec.ln(x)
        logits = (x @ dec.token_embedding.weight.to(x.dtype).T).float()[:, 0]  # (B, V)
        filtered = logits + self.mask_rest + s["first"] * self.mask_first
        return logits, F.log_softmax(filtered, dim=-1)

    def _runner(self, b: int):  # noqa: ANN202 - () -> (logits, logprobs)
        if b in self.buffers:
            return self.buffers[b]["run"]
        s = self._alloc(b)
        if not self.graphs_on:
            s["run"] = lambda: self._step(s)
        else:
            graph, out = capture(lambda: self._step(s), self.device)
            s["run"] = lambda: (graph.replay(), out)[1]
        self.buffers[b] = s
        return s["run"]

    def prepare(self) -> None:
        """Capture the graphs of every batch size now (before other threads use the GPU), then decode a
        silent batch of each size: the encoder's first call at a batch shape took 2.8 s on an H200
        (`bench judge`, 8 at once, run 4), a stall no live turn should meet."""
        with self.lock, torch.inference_mode():
            for b in BATCHES:
                self._runner(b)
        d = self.model.dims
        for b in BATCHES:
            self.decode(torch.zeros(b, d.n_mels, 2 * d.n_audio_ctx))

    # --- decoding ----------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, mel: torch.Tensor) -> list[tuple[str, float, float]]:
        """(B, n_mels, 3000) -> [(text, avg_logprob, no_speech_prob)] per clip, greedy."""
        out = []
        for i in range(0, mel.shape[0], BATCHES[-1]):
            out += self._decode(mel[i: i + BATCHES[-1]])
        return out

    def _decode(self, mel: torch.Tensor) -> list[tuple[str, float, float]]:
        n = mel.shape[0]
        b = next(k for k in BATCHES if k >= n)
        x = mel.to(self.device, self.dtype)
        if n < b:  # the encoder sees only the batch shapes that prepare() warmed up (rows are independent)
            x = torch.cat([x, x.new_zeros(b - n, *x.shape[1:])])
        xa = self.model.encoder(x)[:n]  # (n, 1500, D)
        eot = self.tok.eot
        with self.lock:
            run = self._runner(b)
            s = self.buffers[b]
            s["k"].zero_()
            s["v"].zero_()
            for i, blk in enumerate(self.model.decoder.blocks):
                s["xk"][i, :n] = blk.cross_attn.key(xa)
                s["xv"][i, :n] = blk.cross_attn.value(xa)
            no_speech = torch.full((n,), float("nan"))
            for p, t in enumerate(self.initial):  # the start tokens; the last one's output is the first sample
                s["tok"].fill_(t)
                s["pos"].fill_(p)
                s["first"].fill_(1.0 if p == len(self.initial) - 1 else 0.0)
                logits, logprobs = run()
                if p == self.sot_index and self.tok.no_speech is not None:
                    no_speech = logits[:n].softmax(-1)[:, self.tok.no_speech].cpu()
            s["first"].fill_(0.0)
            tokens: list[list[int]] = [[] for _ in range(n)]
            sum_lp = torch.zeros(n, device=self.device)
            done = torch.zeros(n, dtype=torch.bool, device=self.device)
            for p in range(len(self.initial), len(self.initial) + self.sample_len):
                nxt = logprobs[:n].argmax(-1)  # (n,)
                sum_lp += logprobs[:n].gather(1, nxt[:, None])[:, 0] * ~done
                nxt = torch.where(done, eot, nxt)
                done |= nxt == eot
                host = nxt.tolist()
                for r in range(n):
                    if host[r] != eot:
                        tokens[r].append(host[r])
                if bool(done.all()) or p >= self.model.dims.n_text_ctx:
                    break
                s["tok"][:n, 0] = nxt
                s["pos"].fill_(p)
                _, logprobs = run()
        sums = sum_lp.tolist()
        return [(self.tok.decode(t).strip(), sums[r] / (len(t) + 1), float(no_speech[r]))
                for r, t in enumerate(tokens)]
