"""Percentile summaries and the text tables printed by `parley bench latency/concurrency`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Distribution of one measure, in milliseconds."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values_ms: Sequence[float]) -> Summary | None:
    """p50/p90/p99/max of a list of values (ms); None when empty. Linear-interpolated percentiles."""
    v = np.asarray([x for x in values_ms if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return None
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return Summary(
        n=len(v),
        mean=float(v.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(v.max()),
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def table(rows: list[tuple[str, Summary | None]], title: str = "") -> str:
    """A fixed-width table, one row per measure: n, mean, p50, p90, p99, max (ms)."""
    head = f"{'measure':<28}{'n':>5}{'mean':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for name, s in rows:
        if s is None:
            lines.append(f"{name:<28}{0:>5}{'-':>8}{'-':>8}{'-':>8}{'-':>8}{'-':>8}")
        else:
            lines.append(
                f"{name:<28}{s.n:>5}{_fmt(s.mean):>8}{_fmt(s.p50):>8}{_fmt(s.p90):>8}"
                f"{_fmt(s.p99):>8}{_fmt(s.max):>8}"
            )
    return "\n".join(lines)


def ratio(a: Summary | None, b: Summary | None, key: str = "p50") -> float | None:
    """a[key] / b[key] (e.g. cascade p50 / direct p50); None when either is missing or zero."""
    if a is None or b is None:
        return None
    den = getattr(b, key)
    return None if den == 0 else getattr(a, key) / den
