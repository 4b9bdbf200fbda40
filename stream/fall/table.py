"""Window tables: every window the pendant uploads for a recordings file, with features.

Building the table runs the pendant's trigger over each whole recording and computes the
features of each window; it is cached on disk (keyed by the file's hash, the trigger
configuration, the feature version and the signal transform) because training and
cross-validation read it many times.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device_profiles.pendant_trigger import ImpactWindow, TriggerConfig
from stream.fall.data import Recordings, trigger_windows
from stream.fall.features import FEATURE_NAMES, FEATURE_VERSION, window_features
from stream.fall.shapes import align

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Window labels: the window of a fall recording holding its fall impact, any window of a
#: daily-activity recording, and other windows of fall recordings (steps before a slip,
#: moving after it), which are left out of training because nobody marked them.
FALL, ADL, UNLABELLED = 1, 0, -1
LABEL_VERSION = 2  # bumped when label_windows changes (part of the cache key)

Transform = Callable[[FloatArray, np.random.Generator], FloatArray]


@dataclass(frozen=True)
class WindowTable:
    """Features of every uploaded window, with the recording each came from."""

    X: FloatArray  # (W, F)
    rec: IntArray  # (W,) recording index
    anchor: IntArray  # (W,) impact sample, in samples of the pendant's rate
    label: IntArray  # (W,) FALL / ADL / UNLABELLED
    # per recording
    subject: tuple[str, ...]
    activity: tuple[str, ...]
    is_fall: npt.NDArray[np.bool_]
    seconds: FloatArray
    #: (W, pre_n + post_n, 3) the windows themselves, impact at ``pre_n`` (edges
    #: repeated; see :func:`stream.fall.shapes.align`), for the shape features; None in
    #: tables built from features alone.
    windows: npt.NDArray[np.float32] | None = None

    @property
    def n_recordings(self) -> int:
        """Number of recordings (including those without any window)."""
        return len(self.subject)


def default_cache_dir() -> Path:
    """``$CAREWATCH_CACHE_DIR`` or ``$XDG_CACHE_HOME/carewatch/fall`` (``~/.cache``)."""
    env = os.environ.get("CAREWATCH_CACHE_DIR")
    if env:
        return Path(env) / "fall"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carewatch" / "fall"


def _posture_change_deg(w: ImpactWindow, rate_hz: int) -> float:
    """Angle between the mean acceleration of a window's first and last half second."""
    k = max(1, rate_hz // 2)
    acc = np.column_stack([w.x, w.y, w.z])
    u, v = acc[:k].mean(axis=0), acc[-k:].mean(axis=0)
    den = float(np.linalg.norm(u) * np.linalg.norm(v))
    if den < 1e-9:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(float(u @ v) / den, -1.0, 1.0))))


def label_windows(windows: Sequence[ImpactWindow], is_fall: bool, rate_hz: int) -> list[int]:
    """Labels of one recording's windows.

    Nobody marked where in a fall recording the fall is, and the highest peak is not
    always it: a soft fall can peak lower than the steps of the walk before it. A fall
    ends in another posture, so the fall window is the highest impact among the windows
    across which the posture changes most (at least 30 degrees and 60 % of the largest
    change in the recording); a fall without posture change (sitting down hard on the
    floor) is the highest impact. Other windows of fall recordings stay UNLABELLED.
    """
    if not is_fall:
        return [ADL] * len(windows)
    out = [UNLABELLED] * len(windows)
    if not windows:
        return out
    change = [_posture_change_deg(w, rate_hz) for w in windows]
    top = max(change)
    candidates = [k for k, c in enumerate(change) if top >= 30.0 and c >= 0.6 * top]
    if not candidates:
        candidates = list(range(len(windows)))
    best = max(candidates, key=lambda k: windows[k].peak_g)
    out[best] = FALL
    return out


def build_table(
    rec: Recordings,
    cfg: TriggerConfig,
    *,
    transform: Transform | None = None,
    transform_name: str = "",
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> WindowTable:
    """Trigger + features for every recording (cached when ``cache_dir`` is given).

    ``transform`` (with a unique ``transform_name`` for the cache key) changes each
    recording at the pendant's rate before the trigger runs: a random rotation, a gain
    error... (robustness checks and augmentation).
    """
    trigger = cfg.to_options()
    if not trigger.get("min_turn_deg"):
        # The filter off gives the windows of triggers that predate the option: the same
        # cache entry.
        del trigger["min_turn_deg"]
    key_src = json.dumps(
        {
            "data": rec.sha256,
            "trigger": trigger,
            "features": FEATURE_VERSION,
            "names": FEATURE_NAMES,
            "transform": transform_name,
            "seed": seed,
            "labels": LABEL_VERSION,
            "windows": 1,  # the aligned windows are stored too
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = cache_dir / f"table-{key}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return WindowTable(
                    X=z["X"],
                    rec=z["rec"],
                    anchor=z["anchor"],
                    label=z["label"],
                    subject=rec.subject,
                    activity=rec.activity,
                    is_fall=np.asarray(rec.is_fall, dtype=bool),
                    seconds=np.asarray([rec.seconds(i) for i in range(len(rec))]),
                    windows=z["windows"],
                )
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache is rebuilt
    rng = np.random.default_rng(seed)
    xs: list[FloatArray] = []
    recs: list[int] = []
    anchors: list[int] = []
    labels: list[int] = []
    aligned: list[npt.NDArray[np.float32]] = []
    n = cfg.pre_n + cfg.post_n
    for i in range(len(rec)):
        sig = rec.at_rate(i, cfg.rate_hz)
        if transform is not None:
            sig = transform(sig, rng)
        windows = trigger_windows(sig, cfg)
        win_anchors = [w.start_sample + w.trigger_index for w in windows]
        labels += label_windows(windows, rec.is_fall[i], cfg.rate_hz)
        for w, anchor in zip(windows, win_anchors, strict=True):
            acc = np.column_stack([w.x, w.y, w.z])
            xs.append(window_features(acc, w.trigger_index, cfg.rate_hz))
            aligned.append(align(acc, w.trigger_index, cfg.pre_n, n).astype(np.float32))
            recs.append(i)
            anchors.append(anchor)
        if progress is not None and (i + 1) % 500 == 0:
            progress(f"features: {i + 1}/{len(rec)} recordings")
    stacked = np.stack(aligned) if aligned else np.zeros((0, n, 3), dtype=np.float32)
    table = WindowTable(
        X=np.vstack(xs) if xs else np.zeros((0, len(FEATURE_NAMES))),
        rec=np.asarray(recs, dtype=np.int64),
        anchor=np.asarray(anchors, dtype=np.int64),
        label=np.asarray(labels, dtype=np.int64),
        subject=rec.subject,
        activity=rec.activity,
        is_fall=np.asarray(rec.is_fall, dtype=bool),
        seconds=np.asarray([rec.seconds(i) for i in range(len(rec))]),
        windows=stacked,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            X=table.X,
            rec=table.rec,
            anchor=table.anchor,
            label=table.label,
            windows=stacked,
        )
        os.replace(tmp, path)
    return table


def random_rotation(rng: np.random.Generator) -> FloatArray:
    """A uniformly random 3-D rotation matrix."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotate_recording(sig: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Transform: the whole recording seen by a sensor mounted at a random rotation."""
    return np.asarray(sig @ random_rotation(rng).T, dtype=np.float64)
