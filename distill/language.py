"""Is a teacher reply in English? The SmolLM2-135M teacher answers ~1 % of the prompts in another
language or in babble of one (German, Portuguese, Hindi, ...: 43 of 3,519 replies of the first CPU
prior), which English piper joe then reads out; such turns teach the direct model nothing it should
say, so `distill.s2s_data.load_turns` leaves them out. py3langid (langid.py's model, bundled)
decides; a short reply ("Hiro. Hello!", "143.") gets a low confidence and is kept."""

from __future__ import annotations

import functools

FOREIGN_MIN_PROB = 0.5  # a reply is foreign when langid names another language with this confidence


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


def language(text: str) -> tuple[str, float]:
    """-> (ISO 639-1 code, normalized probability) of the text's language."""
    lang, prob = _identifier().classify(text)
    return str(lang), float(prob)


def is_foreign(text: str) -> bool:
    """True when the text is confidently not English (empty text: False)."""
    if not text.strip():
        return False
    lang, prob = language(text)
    return lang != "en" and prob >= FOREIGN_MIN_PROB
