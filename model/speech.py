"""The direct speech-to-speech model: temporal Llama over codec frames + depth transformer.

One temporal step per codec frame (25 Hz with codec v2; 12.5 Hz with v1). The input embedding of step t is the sum of

    text_emb(text[t-1])  +  Σ_k user_emb_k(user[k, t])  +  Σ_k agent_emb_k(agent_delayed[k, t-1])

(see ``model/layout.py`` for the picture). The temporal transformer is the project's Llama
(``model/llama.py``), initialized from SmolLM2-135M-Instruct and kept frozen except for LoRA
adapters. Its final hidden state h_t gives

- the inner-monologue text logits: the backbone's own (tied) LM head for real text tokens, plus a
  new row for PAD (and BOS, never a target);
- the agent's audio: a small depth transformer (``model/depth.py``) writes the K codebooks of the
  delayed column t one by one, conditioned on h_t and the text token of step t.

Audio embeddings are factorized (a ``audio_emb_dim``-wide table per codebook, summed, then one
projection per stream) to keep the trained checkpoint small (it travels in git, <= 16 MiB files).
Trained parts: ``trainable_state_dict()`` (everything but the frozen backbone weights).
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.depth import DepthConfig, DepthTransformer, ParallelHeads
from model.layout import StreamLayout, validate_layout
from model.llama import Llama, LlamaConfig
from model.lora import apply_lora

LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class AudioHead(str, enum.Enum):
    """How the model writes the K codebooks of an agent frame."""

    DEPTH = "depth"  # a depth transformer, one codebook after the other (Moshi)
    DELAY = "delay"  # parallel heads over a stair delay pattern (0, 1, ..., K-1)


@dataclass(frozen=True)
class SpeechConfig:
    """Everything needed to rebuild the model; saved as JSON in every checkpoint."""

    backbone: LlamaConfig
    layout: StreamLayout = field(default_factory=StreamLayout)
    depth: DepthConfig = field(default_factory=DepthConfig)
    audio_emb_dim: int = 128  # factorized codebook embeddings (user and agent streams)
    lora_rank: int = 8  # 0: no adapters (backbone fully frozen)
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    audio_head: AudioHead = AudioHead.DEPTH
    user_text_head: bool = False  # aux head writing the user's words (Listen / Converse stages)
    train_backbone: bool = False  # full fine-tuning: every backbone weight trains (then lora_rank is 0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio_head", AudioHead(self.audio_head))  # JSON gives a str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(s: str) -> "SpeechConfig":
        d = json.loads(s)
        bb = dict(d["backbone"])
        bb = {k: tuple(v) if isinstance(v, list) else v for k, v in bb.items()}
        return SpeechConfig(
            backbone=LlamaConfig(**bb),
            layout=StreamLayout.from_dict(d["layout"]),
            depth=DepthConfig(**d["depth"]),
            audio_emb_dim=d["audio_emb_dim"],
            lora_rank=d["lora_rank"],
            lora_alpha=d["lora_alpha"],
            lora_targets=tuple(d["lora_targets"]),
            audio_head=d.get("audio_head", "depth"),
            user_text_head=d.get("user_text_head", False),
            train_backbone=d.get("train_backbone", False),
        )


class CodebookEmbedding(nn.Module):
    """Σ_k E_k(codes[..., k, t]) projected to d_model: codes (B, K, T) -> (B, T, d_model)."""

    def __init__(self, n_q: int, vocab: int, dim: int, d_model: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(n_q, vocab, dim) * 0.5)  # (K, V, e)
        self.proj = nn.Linear(dim, d_model, bias=False)
        # output rms ~0.1 per channel, like SmolLM2's token embeddings (std 0.136): the frozen
        # backbone starts from inputs of the scale it was trained on
        nn.init.normal_(self.proj.weight, std=0.1 / (0.5 * (n_q * dim) ** 0.5))
        self.register_buffer("offsets", torch.arange(n_q) * vocab, persistent=False)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        K, V, e = self.table.shape
        flat = self.table.view(K * V, e)
        idx = codes.transpose(-1, -2) + self.offsets  # (B, T, K)
        return self.proj(F.embedding(idx, flat).sum(-2))  # (B, T, d_model)


class SpeechModel(nn.Module):
    def __init__(self, cfg: SpeechConfig) -> None:
        super().__init__()
        validate_layout(cfg.layout)
        if cfg.layout.text_card != cfg.backbone.vocab_size:
            raise ValueError(f"layout text_card {cfg.layout.text_card} != backbone vocab {cfg.backbone.vocab_size}")
        self.cfg = cfg
        L, d = cfg.layout, cfg.backbone.dim
        self.backbone = Llama(cfg.backbone)
        if cfg.train_backbone and cfg.lora_rank > 0:
            raise ValueError("train_backbone (full fine-tuning) takes no LoRA adapters: set lora_rank=0")
        self.backbone.requires_grad_(cfg.train_backbone)
        if cfg.lora_rank > 0:
            apply_lora(self.backbone, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
        self.user_emb = CodebookEmbedding(L.n_q, L.card + 1, cfg.audio_emb_dim, d)
        self.agent_emb = CodebookEmbedding(L.n_q, L.audio_vocab, cfg.audio_emb_dim, d)
        self.text_special = nn.Parameter(torch.randn(2, d) * 0.02)  # PAD, BOS input embeddings
        self.text_special_head = nn.Linear(d, 1, bias=False)  # PAD logit (BOS is never written)
        nn.init.zeros_(self.text_special_head.weight)
        if cfg.audio_head is AudioHead.DEPTH:
            self.depth = DepthTransformer(cfg.depth, d, d, L.n_q, L.card)
        else:
            if list(L.delays) != list(range(L.n_q)):
                raise ValueError(f"audio_head='delay' needs delays (0, 1, ..., K-1), got {L.delays}")
            self.depth = ParallelHeads(cfg.depth, d, d, L.n_q, L.card)
        if cfg.user_text_head:  # h_t -> what the user said, through the tied text head
            self.user_text_proj = nn.Linear(d, d, bias=False)
            nn.init.eye_(self.user_text_proj.weight)

    # --- pieces -------------------------------------------------------------------------
    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """text ids (..., ) incl. PAD/BOS -> (..., d_model)."""
        tc = self.cfg.layout.text_card
        real = self.backbone.tok_embeddings(text.clamp(max=tc - 1))
        special = self.text_special[(text - tc).clamp(0, 1)].to(real.dtype)
        return torch.where((text >= tc).unsqueeze(-1), special, real)

    def frame_embedding(self, user: torch.Tensor, agent_prev: torch.Tensor, text_prev: torch.Tensor) -> torch.Tensor:
        """user, agent_prev: (B, K, T); text_prev: (B, T) -> input embeddings (B, T, d_model)."""
        x = self.embed_text(text_prev)
        return x + self.user_emb(user).to(x.dtype) + self.agent_emb(agent_prev).to(x.dtype)

    def text_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> (..., text_vocab): tied backbone head + PAD/BOS rows."""
        real = self.backbone.output(h)
        pad = self.text_special_head(h).to(real.dtype)
        bos = torch.full_like(pad, float("-inf"))
        return torch.cat([real, pad, bos], dim=-1)

    # --- training: whole sequences --------------------------------------------------------
    def forward(
        self,
        user_in: torch.Tensor,  # (B, K, T)
        agent_in: torch.Tensor,  # (B, K, T) delayed column t-1
        text_in: torch.Tensor,  # (B, T) text t-1
        text_tgt: torch.Tensor,  # (B, T) text t (teacher forcing for the depth transformer)
        agent_tgt: torch.Tensor,  # (B, K, T) delayed column t
        with_user_text: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """-> text logits (B, T, text_vocab), audio logits (B, T, K, card)
        [, user-text logits (B, T, text_vocab) when ``with_user_text`` (needs ``user_text_head``)]."""
        B, K, T = agent_tgt.shape
        x = self.frame_embedding(user_in, agent_in, text_in)
        h = self.backbone(embeds=x, return_hidden=True)  # (B, T, d), no cache
        text_logits = self.text_logits(h)
        hf = h.reshape(B * T, -1)
        temb = self.embed_text(text_tgt).reshape(B * T, -1)
        codes = agent_tgt.permute(0, 2, 1).reshape(B * T, K)
        audio_logits = self.depth(hf, temb, codes).view(B, T, K, -1)
        if with_user_text:
            return text_logits, audio_logits, self.text_logits(self.user_text_proj(h))
        return text_logits, audio_logits

    # --- checkpoints of the trained parts ---------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything that is not a frozen backbone weight (LoRA adapters included)."""
        frozen = {n for n, p in self.backbone.named_parameters(prefix="backbone") if not p.requires_grad}
        return {n: p.detach() for n, p in self.named_parameters() if n not in frozen}

    def load_trainable(self, sd: dict[str, torch.Tensor]) -> None:
        want = set(self.trainable_state_dict())
        if set(sd) != want:
            raise ValueError(f"checkpoint keys differ: missing {sorted(want - set(sd))[:5]}, extra {sorted(set(sd) - want)[:5]}")
        missing, unexpected = self.load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
