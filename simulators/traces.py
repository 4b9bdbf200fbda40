"""Acceleration traces for the pendant simulators' ``impact`` action.

A trace is a list of (x, y, z) samples in g at some rate. Scenarios name one as
``{synthetic: fall}`` / ``{synthetic: sit_down}`` or ``{npz: FILE, index: N}`` for a
recording in the SisFall npz layout (``signals``, ``offsets``, ``rate_hz``,
``g_per_count``); :func:`resolve_trace` turns either into samples and a rate.
numpy is imported only to read npz files, so the simulators stay light otherwise.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Sample = tuple[float, float, float]


def _noise(rng: random.Random, sd: float) -> float:
    return rng.gauss(0.0, sd)


def synthetic_fall(rate_hz: float = 50.0, seed: int = 7) -> list[Sample]:
    """A forward fall from standing: walking, ~0.4 s of near free fall, a 4-5 g impact,
    then lying still on the side (gravity moved from the vertical to a horizontal axis).

    Shaped after the SisFall waist recordings (y is the vertical axis when standing).
    """
    rng = random.Random(seed)
    out: list[Sample] = []
    n_walk, n_fall, n_hit, n_lie = (int(rate_hz * s) for s in (4.0, 0.4, 0.12, 10.0))
    for i in range(n_walk):  # walking: ~1.8 steps/s on top of gravity
        phase = 2 * math.pi * 1.8 * i / rate_hz
        out.append(
            (
                0.15 * math.sin(phase) + _noise(rng, 0.03),
                -1.0 - 0.25 * math.sin(2 * phase) + _noise(rng, 0.03),
                0.1 * math.cos(phase) + _noise(rng, 0.03),
            )
        )
    for i in range(n_fall):  # magnitude drops towards 0.2 g while the body rotates
        f = i / max(1, n_fall - 1)
        out.append((0.3 * f, -1.0 + 0.8 * f, -0.2 * f + _noise(rng, 0.02)))
    for i in range(n_hit):
        peak = 4.6 * math.sin(math.pi * (i + 1) / (n_hit + 1))
        out.append((peak * 0.8, -0.3 * peak, peak * 0.5))
    for _ in range(n_lie):  # on the side: gravity on x, almost no movement
        out.append((0.98 + _noise(rng, 0.01), -0.1 + _noise(rng, 0.01), 0.12 + _noise(rng, 0.01)))
    return out


def synthetic_sit_down(rate_hz: float = 50.0, seed: int = 11) -> list[Sample]:
    """Sitting down firmly on a chair: a 1.8 g bump, upright before and after."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for i in range(int(rate_hz * 8)):
        t = i / rate_hz
        bump = 0.9 * math.exp(-(((t - 3.0) / 0.08) ** 2))
        dip = -0.4 * math.exp(-(((t - 2.7) / 0.2) ** 2))
        out.append((0.05 + _noise(rng, 0.02), -1.0 - bump - dip, 0.2 * min(1.0, t / 3.0)))
    return out


SYNTHETIC = {"fall": synthetic_fall, "sit_down": synthetic_sit_down}


def npz_trace(path: str | Path, index: int) -> tuple[list[Sample], float]:
    """Recording ``index`` of a SisFall-format npz file, in g, with its rate."""
    import numpy as np

    with np.load(Path(path), allow_pickle=False) as data:
        offsets = data["offsets"]
        if not 0 <= index < len(offsets) - 1:
            raise ValueError(f"{path}: no recording {index} (0..{len(offsets) - 2})")
        g = float(data["g_per_count"])
        rate = float(data["rate_hz"])
        block = data["signals"][offsets[index] : offsets[index + 1]].astype(float) * g
    return [(float(x), float(y), float(z)) for x, y, z in block], rate


def resolve_trace(spec: Mapping[str, Any], rate_hz: float = 50.0) -> tuple[list[Sample], float]:
    """Samples and rate for a scenario's trace spec; raises ValueError naming the problem."""
    if "synthetic" in spec:
        name = spec["synthetic"]
        if name not in SYNTHETIC:
            raise ValueError(f"unknown synthetic trace {name!r}; known: {sorted(SYNTHETIC)}")
        return SYNTHETIC[name](rate_hz), rate_hz
    if "npz" in spec:
        return npz_trace(spec["npz"], int(spec.get("index", 0)))
    raise ValueError("a trace needs 'synthetic: NAME' or 'npz: FILE' (+ 'index')")
