"""Ready-made configurations of the direct speech model: tiny (tests) and full (SmolLM2 backbone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.speech import AudioHead, SpeechConfig


def tiny_speech_config(lora_rank: int = 4, audio_head: AudioHead | str = "depth", n_q: int = 4, card: int = 16,
                       text_card: int = 64, user_text_head: bool = False,
                       train_backbone: bool = False, text_lead: int = 0) -> SpeechConfig:
    """A tiny random model (tests, smoke runs): 2 layers of width 32, no SmolLM2."""
    from model.depth import DepthConfig
    from model.layout import StreamLayout
    from model.llama import LlamaConfig
    from model.speech import AudioHead, SpeechConfig

    delays = tuple(range(n_q)) if AudioHead(audio_head) is AudioHead.DELAY else (0,) + (1,) * (n_q - 1)
    layout = StreamLayout(n_q=n_q, card=card, text_card=text_card, delays=delays, text_lead=text_lead)
    bb = LlamaConfig(vocab_size=text_card, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    return SpeechConfig(backbone=bb, layout=layout, depth=DepthConfig(dim=32, n_layers=2, n_heads=4, ffn_dim=64),
                        audio_emb_dim=16, lora_rank=lora_rank, audio_head=audio_head,
                        user_text_head=user_text_head, train_backbone=train_backbone)


def full_speech_config(lora_rank: int = 8, audio_head: AudioHead | str = "depth", gguf: str | None = None,
                       n_q: int = 8, card: int = 2048, user_text_head: bool = False,
                       train_backbone: bool = False, text_lead: int = 0) -> SpeechConfig:
    """The served model: SmolLM2 backbone (from `gguf`, default bundled) over the full codec.
    ``text_lead``: frames each word's monologue token comes before its speech (model.layout)."""
    from model.gguf import smollm2_config
    from model.layout import StreamLayout
    from model.speech import AudioHead, SpeechConfig

    bb = smollm2_config(gguf)
    delays = tuple(range(n_q)) if AudioHead(audio_head) is AudioHead.DELAY else (0,) * n_q
    layout = StreamLayout(n_q=n_q, card=card, text_card=bb.vocab_size, delays=delays, text_lead=text_lead)
    return SpeechConfig(backbone=bb, layout=layout, lora_rank=lora_rank, audio_head=audio_head,
                        user_text_head=user_text_head, train_backbone=train_backbone)
