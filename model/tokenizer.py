"""Byte-level BPE tokenizer and chat template, rebuilt from GGUF metadata.

``Tokenizer`` wraps a HF ``tokenizers`` model built from the GGUF vocabulary and merges (GPT-2
byte-level BPE; SmolLM2's pre-tokenizer also splits digits one by one), plus the Jinja chat
template of the file. ``IncrementalDecoder`` turns a stream of ids into text pieces without
ever emitting half a UTF-8 character.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

# ChatML, used when a file carries no template
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TokenizerSpec:
    """What the GGUF says about its tokenizer (JSON-serializable, cached next to the weights)."""

    tokens: list[str]
    merges: list[str]  # "left right"
    special: list[int]  # control tokens (matched whole, skipped when decoding with skip_special)
    bos_id: int | None
    eos_id: int
    pad_id: int | None = None
    pre: str = "gpt2"  # tokenizer.ggml.pre
    chat_template: str = CHATML_TEMPLATE
    extra_stop_ids: list[int] = field(default_factory=list)


class Tokenizer:
    def __init__(self, spec: TokenizerSpec) -> None:
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        self.spec = spec
        vocab = {t: i for i, t in enumerate(spec.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in spec.merges]
        tok = HFTokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if spec.pre in ("smollm", "starcoder", "refact", "qwen2", "llama3", "llama-bpe"):
            # these pre-tokenizers keep digits apart (llama.cpp: "\p{N}" before the GPT-2 regex)
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(spec.tokens[i], special=True, normalized=False) for i in spec.special])
        self._tok = tok
        self.eos_id = spec.eos_id
        self.bos_id = spec.bos_id
        self.stop_ids = frozenset([spec.eos_id, *spec.extra_stop_ids])
        self._template = None

    @property
    def vocab_size(self) -> int:
        return len(self.spec.tokens)

    def encode(self, text: str) -> list[int]:
        """Text (special tokens like ``<|im_start|>`` written literally are recognized) -> ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render messages [{"role", "content"}] with the file's Jinja template (as HF does)."""
        if self._template is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(msg: str) -> None:
                raise ValueError(f"chat template: {msg}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.spec.chat_template)
        bos = self.spec.tokens[self.bos_id] if self.bos_id is not None else ""
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=bos, eos_token=self.spec.tokens[self.eos_id])

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt))

    def to_json(self) -> str:
        return json.dumps(self.spec.__dict__)

    @staticmethod
    def from_json(s: str) -> "Tokenizer":
        return Tokenizer(TokenizerSpec(**json.loads(s)))

    def incremental_decoder(self, skip_special: bool = True) -> "IncrementalDecoder":
        return IncrementalDecoder(self, skip_special)


class IncrementalDecoder:
    """Ids in, text pieces out. A piece is emitted once its bytes form whole characters.

    Byte-level BPE tokens can split a UTF-8 character (emoji, accents); decoding such a prefix
    gives U+FFFD, so the piece is held back until the next ids complete it. Decoding a short
    window (``prefix`` ids of context + the pending ids) keeps each step O(1) in the text length.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True) -> None:
        self.tok, self.skip = tokenizer, skip_special
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] were already emitted (decoding context)
        self.read = 0

    def push(self, token_id: int) -> str:
        """Add one id; returns the new text ('' while a character is incomplete)."""
        self.ids.append(token_id)
        done = self.tok.decode(self.ids[self.prefix:self.read], self.skip)
        full = self.tok.decode(self.ids[self.prefix:], self.skip)
        if len(full) > len(done) and not full.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return full[len(done):]
        return ""

    def flush(self) -> str:
        """Whatever is still pending (possibly with U+FFFD) at the end of the stream."""
        done = self.tok.decode(self.ids[self.prefix:self.read], self.skip)
        full = self.tok.decode(self.ids[self.prefix:], self.skip)
        self.prefix = self.read = len(self.ids)
        return full[len(done):]
