"""Speech engines behind one interface (`voice.engines.base`).

    cascade  Whisper -> chat LLM -> TTS, streamed clause by clause (`CascadeConfig`)
    tone     a deterministic test engine: a known sound after a known delay (`ToneConfig`)
    direct   codec -> direct speech model -> codec (`DirectConfig`)

`create_engine(config)` builds (and warms up) the engine its typed config describes; the
`parley serve` command builds that config from its arguments (voice/cli/server.py).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from voice.engines.base import Engine
    from voice.engines.cascade import CascadeConfig
    from voice.engines.tone import ToneConfig
    from voice.engines.direct import DirectConfig

    EngineConfig = Union[CascadeConfig, ToneConfig, DirectConfig]


class EngineKind(str, enum.Enum):
    """The engines `parley serve --engine` knows."""

    CASCADE = "cascade"
    TONE = "tone"
    DIRECT = "direct"


def create_engine(config: EngineConfig) -> Engine:
    """The engine for `config` (a CascadeConfig, ToneConfig or DirectConfig), ready to serve."""
    from voice.engines import cascade, direct, tone  # noqa: PLC0415 - the engines load models lazily

    if isinstance(config, cascade.CascadeConfig):
        return cascade.create(config)
    if isinstance(config, tone.ToneConfig):
        return tone.create(config)
    if isinstance(config, direct.DirectConfig):
        return direct.create(config)
    raise TypeError(f"not an engine config: {config!r}")
