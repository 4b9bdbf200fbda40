"""Synthetic accelerometer signals (in g) for tests, demos and smoke checks.

They are idealised, not realistic: use them to exercise code paths, never to measure a
model (that is what SisFall and ``carewatch fall eval`` are for).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def still(
    seconds: float, rate_hz: float, direction: tuple[float, float, float] = (0, 0, 1)
) -> FloatArray:
    """Resting sensor: gravity along ``direction``."""
    n = round(seconds * rate_hz)
    d = np.asarray(direction, dtype=np.float64)
    return np.tile(d / np.linalg.norm(d), (n, 1))


def walking(seconds: float, rate_hz: float, step_g: float = 0.35) -> FloatArray:
    """Upright walking at two steps a second: vertical bounce of +-``step_g``."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    return np.column_stack(
        [
            0.08 * np.sin(2 * np.pi * t),
            0.05 * np.sin(2 * np.pi * t + 1.0),
            1.0 + step_g * np.sin(4 * np.pi * t),
        ]
    )


def fall(
    rate_hz: float,
    *,
    before_s: float = 4.0,
    after_s: float = 6.0,
    peak_g: float = 5.0,
    freefall_g: float = 0.3,
    fall_s: float = 0.6,
) -> FloatArray:
    """Standing still, a fall turning the body 90 degrees, an impact, lying still."""
    parts = [still(before_s, rate_hz)]
    n = max(2, round(fall_s * rate_hz))
    rows = []
    for i in range(n):
        frac = (i + 1) / n
        th = (math.pi / 2) * frac
        # The magnitude drops to freefall_g in the first half and stays there.
        mag = 1.0 - (1.0 - freefall_g) * min(1.0, 2.0 * frac)
        rows.append((mag * math.sin(th), 0.0, mag * math.cos(th)))
    parts.append(np.asarray(rows))
    k = max(1, round(0.02 * rate_hz))  # the impact lasts a few samples at any rate
    spike = [0.5 * peak_g] * k + [peak_g] * k + [0.6 * peak_g] * k + [1.6] * k + [0.7] * k
    parts.append(np.column_stack([spike, np.zeros(len(spike)), np.zeros(len(spike))]))
    parts.append(still(after_s, rate_hz, (1, 0, 0)))
    return np.vstack(parts)


def with_noise(a: FloatArray, rng: np.random.Generator, sigma_g: float = 0.01) -> FloatArray:
    """Sensor noise."""
    return np.asarray(a + rng.normal(0.0, sigma_g, a.shape), dtype=np.float64)


def write_recordings(
    path: str | Path,
    recordings: list[tuple[FloatArray, str, str, bool]],
    *,
    rate_hz: int,
    g_per_count: float,
) -> None:
    """Write (signal in g, subject, activity, is_fall) tuples in the SisFall npz format."""
    sigs = [
        np.clip(np.round(s / g_per_count), -32768, 32767).astype(np.int16) for s, *_ in recordings
    ]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sigs])]).astype(np.int64)
    np.savez(
        path,
        signals=np.vstack(sigs) if sigs else np.zeros((0, 3), np.int16),
        offsets=offsets,
        subject=np.asarray([r[1] for r in recordings]),
        activity=np.asarray([r[2] for r in recordings]),
        trial=np.arange(1, len(recordings) + 1, dtype=np.int16),
        is_fall=np.asarray([r[3] for r in recordings], dtype=bool),
        rate_hz=np.int64(rate_hz),
        g_per_count=np.float64(g_per_count),
    )
