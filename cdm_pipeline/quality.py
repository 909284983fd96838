"""Small statistics used by the data-quality checks."""

from __future__ import annotations

import statistics


def robust_z(value: float, history: list[float]) -> float:
    """Median/MAD z-score; with no spread, the relative deviation from the median scaled so that
    a 50% change counts as z = 5."""
    median = statistics.median(history)
    mad = statistics.median(abs(h - median) for h in history)
    if mad > 0:
        return 0.6745 * (value - median) / mad
    if median == 0:
        return 0.0 if value == 0 else float("inf")
    return 10.0 * (value - median) / median


def total_variation(p: list[float], q: list[float]) -> float:
    """Half the L1 distance between two histograms given as counts (normalised here)."""
    sp, sq = sum(p) or 1.0, sum(q) or 1.0
    return 0.5 * sum(abs(a / sp - b / sq) for a, b in zip(p, q, strict=True))
