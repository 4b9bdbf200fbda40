"""Recordings in the SisFall npz format, resampled and cut into pendant windows.

The format (see ../shared/datasets/sisfall/README.md): ``signals`` (N, 3) integer counts,
``offsets`` (M+1,), per recording ``subject``, ``activity``, ``trial``, ``is_fall``, and the
scalars ``rate_hz`` and ``g_per_count``. Any rate and any scale are accepted: recordings
are converted to g and resampled to the pendant's rate exactly as
:func:`device_profiles.pendant_trigger.resample` does, then run through the pendant's own
trigger, so that evaluation sees what a pendant would upload.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from device_profiles.pendant_trigger import ImpactTrigger, ImpactWindow, TriggerConfig
from stream.fall.errors import FallDataError

FloatArray = npt.NDArray[np.float64]

REQUIRED_KEYS = ("signals", "offsets", "subject", "activity", "is_fall", "rate_hz", "g_per_count")


@dataclass(frozen=True)
class Recordings:
    """All recordings of one file, signals still in raw counts (converted on access)."""

    signals: npt.NDArray[np.generic]
    offsets: npt.NDArray[np.int64]
    subject: tuple[str, ...]
    activity: tuple[str, ...]
    trial: tuple[int, ...]
    is_fall: tuple[bool, ...]
    rate_hz: float
    g_per_count: float
    sha256: str

    def __len__(self) -> int:
        return len(self.subject)

    def raw_g(self, i: int) -> FloatArray:
        """Recording ``i`` in g at the file's rate, shape (n, 3)."""
        seg = self.signals[int(self.offsets[i]) : int(self.offsets[i + 1])]
        return np.asarray(seg, dtype=np.float64) * self.g_per_count

    def at_rate(self, i: int, rate_hz: float) -> FloatArray:
        """Recording ``i`` in g resampled to ``rate_hz``."""
        return resample_array(self.raw_g(i), self.rate_hz, rate_hz)

    def seconds(self, i: int) -> float:
        """Duration of recording ``i`` in seconds."""
        return float(self.offsets[i + 1] - self.offsets[i]) / self.rate_hz


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (identifies training data in model metadata and caches)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What reading a damaged npz (a zip of .npy members) or an unloadable member raises.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _array(data: np.lib.npyio.NpzFile, key: str, path: str) -> npt.NDArray[Any]:
    """Member ``key`` of the file; raises :class:`FallDataError` naming it when unreadable.

    Object arrays (e.g. a ``subject`` list of Python strings saved without a fixed width)
    cannot be loaded without pickle, which is never allowed for data files.
    """
    try:
        return np.asarray(data[key])
    except _READ_ERRORS as exc:
        raise FallDataError(
            f"{path}: cannot read {key!r} ({exc}); store it as a plain numeric, bool or "
            "fixed-width string array"
        ) from None


def _scalar(data: np.lib.npyio.NpzFile, key: str, path: str) -> float:
    try:
        value = float(_array(data, key, path).reshape(()))
    except (TypeError, ValueError):
        raise FallDataError(f"{path}: {key!r} must be a scalar number") from None
    if not math.isfinite(value) or value <= 0:
        raise FallDataError(f"{path}: {key!r} must be a positive number, got {value}")
    return value


def load_recordings(path: str | Path) -> Recordings:
    """Load and check a recordings file; raises :class:`FallDataError` naming the problem."""
    p = Path(path)
    try:
        # opened here and closed by the with below: np.load leaks its own on a damaged zip
        fh = open(p, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise FallDataError(f"{p}: no such file") from None
    except OSError as exc:
        raise FallDataError(f"{p}: cannot read it ({exc})") from None
    with fh:
        try:
            data = np.load(fh, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise FallDataError(f"{p}: not a readable npz file ({exc})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise FallDataError(f"{p}: a single array, not an npz file of named arrays")
        with data:
            where = str(p)
            missing = [k for k in REQUIRED_KEYS if k not in data.files]
            if missing:
                raise FallDataError(
                    f"{p}: missing keys {missing}; a recordings file holds {REQUIRED_KEYS}"
                )
            signals = _array(data, "signals", where)
            offsets = _array(data, "offsets", where)
            numeric = np.issubdtype(signals.dtype, np.number)
            if signals.ndim != 2 or signals.shape[1] != 3 or not numeric:
                raise FallDataError(
                    f"{p}: 'signals' must be an (N, 3) numeric array, got {signals.shape}"
                )
            if (
                offsets.ndim != 1
                or offsets.size < 1
                or not np.issubdtype(offsets.dtype, np.integer)
            ):
                raise FallDataError(f"{p}: 'offsets' must be a 1-D integer array")
            offsets = offsets.astype(np.int64)
            if offsets[0] != 0 or offsets[-1] != len(signals) or np.any(np.diff(offsets) < 0):
                raise FallDataError(
                    f"{p}: 'offsets' must start at 0, never decrease and end at len(signals)"
                )
            m = offsets.size - 1
            subject = tuple(str(s) for s in _array(data, "subject", where).reshape(-1))
            activity = tuple(str(s) for s in _array(data, "activity", where).reshape(-1))
            falls = _array(data, "is_fall", where)
            if falls.dtype != np.bool_:
                # bool("False") is True: strings or numbers would silently mislabel recordings
                raise FallDataError(f"{p}: 'is_fall' must be a bool array, got dtype {falls.dtype}")
            is_fall = tuple(bool(b) for b in falls.reshape(-1))
            if "trial" in data.files:
                trials = _array(data, "trial", where)
                if not np.issubdtype(trials.dtype, np.integer):
                    raise FallDataError(
                        f"{p}: 'trial' must be an integer array, got dtype {trials.dtype}"
                    )
                trial = tuple(int(t) for t in trials.reshape(-1))
            else:
                trial = tuple(range(1, m + 1))
            for key, seq in (
                ("subject", subject),
                ("activity", activity),
                ("is_fall", is_fall),
                ("trial", trial),
            ):
                if len(seq) != m:
                    raise FallDataError(f"{p}: {key!r} has {len(seq)} entries for {m} recordings")
            rate = _scalar(data, "rate_hz", str(p))
            gpc = _scalar(data, "g_per_count", str(p))
            if not np.all(np.isfinite(signals)):
                raise FallDataError(f"{p}: 'signals' holds NaN or infinite values")
    return Recordings(
        signals=signals,
        offsets=offsets,
        subject=subject,
        activity=activity,
        trial=trial,
        is_fall=is_fall,
        rate_hz=rate,
        g_per_count=gpc,
        sha256=file_sha256(p),
    )


def resample_array(a: FloatArray, from_hz: float, to_hz: float) -> FloatArray:
    """numpy twin of :func:`device_profiles.pendant_trigger.resample` (same results)."""
    a = np.asarray(a, dtype=np.float64)
    if not (from_hz > 0 and to_hz > 0):
        raise ValueError(f"rates must be positive, got {from_hz} -> {to_hz}")
    n = len(a)
    if n == 0:
        return np.zeros((0, 3))
    ratio = from_hz / to_hz
    k = round(ratio)
    if abs(ratio - k) < 1e-9 and k >= 1:
        if k == 1:
            return a.copy()
        nb = n // k
        return np.asarray(a[: nb * k].reshape(nb, k, 3).mean(axis=1), dtype=np.float64)
    count = math.floor((n - 1) / ratio + 1e-9) + 1
    pos = np.arange(count) * ratio
    i0 = np.minimum(pos.astype(np.int64), n - 1)
    frac = (pos - i0)[:, None]
    i1 = np.minimum(i0 + 1, n - 1)
    return np.asarray(a[i0] + (a[i1] - a[i0]) * frac, dtype=np.float64)


def run_trigger(samples_g: FloatArray, cfg: TriggerConfig) -> tuple[list[ImpactWindow], int]:
    """(uploaded windows, windows the ``min_turn_deg`` filter suppressed) of one recording.

    The recording is run whole through the pendant's trigger (already at ``cfg.rate_hz``).
    """
    trig = ImpactTrigger(cfg)
    rows = [(float(r[0]), float(r[1]), float(r[2])) for r in np.asarray(samples_g).tolist()]
    windows = trig.feed(rows) + trig.flush()
    return windows, trig.suppressed


def trigger_windows(samples_g: FloatArray, cfg: TriggerConfig) -> list[ImpactWindow]:
    """Run the pendant's trigger over one whole recording (already at ``cfg.rate_hz``)."""
    return run_trigger(samples_g, cfg)[0]


def iter_windows(rec: Recordings, cfg: TriggerConfig) -> Iterator[tuple[int, list[ImpactWindow]]]:
    """(recording index, windows the pendant uploads for it) for every recording."""
    for i in range(len(rec)):
        yield i, trigger_windows(rec.at_rate(i, cfg.rate_hz), cfg)
