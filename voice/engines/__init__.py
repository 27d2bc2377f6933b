"""Speech engines behind one interface (`voice.engines.base`).

`create_engine(name, args)` imports `voice.engines.<name>` and calls its `create(args)` with
the parsed `parley serve` arguments; a new engine is a module with `create(args) -> Engine`.
"""

from __future__ import annotations

import importlib

from parley.errors import ParleyError

ENGINES = ("cascade", "delay", "direct")


def create_engine(name: str, args) -> "Engine":  # noqa: ANN001, F821
    if name not in ENGINES:
        raise ParleyError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    try:
        mod = importlib.import_module(f"voice.engines.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"voice.engines.{name}":
            raise ParleyError(f"the {name!r} engine is not available in this build") from None
        raise
    create = getattr(mod, "create", None)
    if create is None and name == "direct":
        create = _create_direct
    if create is None:
        raise ParleyError(f"voice.engines.{name} has no create(args) function")
    return create(args)


def _create_direct(args) -> "Engine":  # noqa: ANN001, F821
    """Builds the direct engine from `parley serve` options when its module has no create()."""
    from voice.engines.direct import DirectConfig, DirectEngine  # noqa: PLC0415

    device = getattr(args, "device", None)
    return DirectEngine(DirectConfig(
        weights=getattr(args, "weights", None),
        device=None if device in (None, "auto") else device,
        max_sessions=int(getattr(args, "max_sessions", 4)),
    ))
