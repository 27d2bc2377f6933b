"""Reply text made speakable before TTS: markdown, list markers, links, code and emoji removed.

    speakable("**Paris** is the capital.\\n- Rome") -> "Paris is the capital. Rome"
"""

from __future__ import annotations

import re

_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"```.*?(```|$)", re.S), " "),  # code blocks
    (re.compile(r"`([^`]*)`"), r"\1"),  # inline code
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url), images
    (re.compile(r"https?://\S+"), "a link"),
    (re.compile(r"^\s*(#{1,6}|>|[-*+•]|\d{1,2}[.)])\s+", re.M), ""),  # headers, quotes, bullets, numbers
    (re.compile(r"(\*{1,3}|_{2,3}|~~)(\S.*?\S|\S)\1"), r"\2"),  # **bold**, *italic*, __x__, ~~x~~
    (re.compile(r"[*#`|~<>\[\]{}\\]"), " "),  # stray markup characters
    (re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]"), ""),  # emoji, pictographs
)


def speakable(text: str) -> str:
    """Plain words and punctuation for TTS; line breaks become sentence breaks."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    text = " ".join(ln if ln[-1] in ".!?,;:" else ln + "." for ln in lines[:-1]) + (" " + lines[-1] if lines[-1:] else "")
    return re.sub(r"\s+([.,!?;:])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
