"""The pendant's on-device impact trigger, in pure Python.

A fall-alarm pendant cannot stream its accelerometer: it watches the acceleration
magnitude and, when it crosses ``threshold_g``, uploads one window of ``pre_s`` seconds
before and ``post_s`` seconds after the impact (reading ``"impact"``). The central fall
classifier (``stream.fall``) decides whether the window is a fall. This module is the
device half, shared by the pendant simulators, the evaluation command and the tests, so
that what is evaluated is exactly what a pendant would send. It must stay free of numpy:
it runs on gateways and in simulators.

Behaviour, sample by sample (``rate_hz`` samples per second, each in g):

1. Each axis is clipped to +-``range_g`` (the sensor's range) and quantized to 1 mg
   (the uplink's resolution), so a window built here is bit-identical to the one the
   processor receives.
2. When the magnitude reaches ``threshold_g`` (and at least ``refractory_s`` passed since
   the previous window's impact sample), a window opens. During the next ``peak_s`` the
   impact sample moves to any higher magnitude: a trip shows a step peak first and the
   body's impact a few hundred ms later, and the window must be centred on the latter.
3. The window is completed once ``post_s`` of samples from the impact sample on have
   arrived. It holds ``pre_s`` before the impact (fewer at the very start of a stream:
   ``trigger_index`` says where the impact is) and ``post_s`` from it on.
4. With ``min_turn_deg`` > 0, a completed window is uploaded only when the posture
   changed across it: the angle between the mean acceleration of its first and of its
   last half second (``rate_hz // 2`` samples each, see :func:`posture_change_deg`) is at
   least ``min_turn_deg``. A fall ends in another posture; walking, jogging and stairs,
   which fire the trigger hundreds of times an hour, do not. A suppressed window is
   counted (:attr:`ImpactTrigger.suppressed`) and otherwise treated exactly like an
   uploaded one: it holds the refractory time, so the windows uploaded with the filter
   are a subset of those uploaded without it, with the same impact samples. A window
   whose posture cannot be told (mean acceleration near zero at one end) is uploaded.

``refractory_s`` shorter than ``post_s`` lets windows overlap: a fall that begins just
after a step triggered must still get a window of its own centred on its impact, or it
could never be detected; the battery/airtime cost of this is bounded by one window per
``refractory_s``.

The default values were chosen on SisFall (Sucerquia et al., Sensors 17(1):198, 2017)
resampled to 50 Hz: the softest fall recording peaks at 1.74 g, so the 1.6 g threshold
keeps a margin below it (older adults fall more softly than the young volunteers who
simulated the falls). 3 s before the impact are needed because a fall from a seat starts
turning the body 1-2 s before it hits the floor, and the posture before that is evidence;
4 s after it show whether the person stays down. See docs/fall_model_card.md.

``min_turn_deg`` defaults to 0 (every window uploaded), which suits a radio without an
airtime limit. Over LoRaWAN (EU868: 1 % duty cycle, 36 s of airtime an hour; one window
is about 5.5 uplinks of packed deltas, 1.9 s at DR5, or 10 raw uplinks, 3.6 s; see
``bench/pendant_airtime.py``) the ~500 windows an hour of brisk activity cannot go up;
the LoRaWAN pendant's profile sets 20 degrees (measured figures in that profile and in
the model card).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from device_profiles.errors import ProfileError

__all__ = [
    "ImpactTrigger",
    "ImpactWindow",
    "TriggerConfig",
    "impact_values",
    "posture_change_deg",
    "resample",
]

Sample = tuple[float, float, float]

_OPTION_PATH = "codec_options.trigger"


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    """Settings of the on-device impact trigger (a profile's ``codec_options.trigger``).

    ``rate_hz`` is the accelerometer sampling rate, ``range_g`` its full scale,
    ``threshold_g`` the magnitude that opens a window, ``pre_s``/``post_s`` the window's
    extent around the impact sample, ``refractory_s`` the least time between two
    windows' impact samples and ``peak_s`` how long after the first crossing the impact
    sample still moves to a higher peak. ``min_turn_deg`` (0 = off) is the least posture
    change across a window for it to be uploaded (see the module docstring, step 4).
    """

    rate_hz: int = 50
    range_g: float = 8.0
    threshold_g: float = 1.6
    pre_s: float = 3.0
    post_s: float = 4.0
    refractory_s: float = 2.0
    peak_s: float = 1.0
    min_turn_deg: float = 0.0

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ProfileError:
            value = getattr(self, key)
            return ProfileError(f"{key}={value!r}: {why}", path=f"{_OPTION_PATH}.{key}")

        if isinstance(self.rate_hz, bool) or not isinstance(self.rate_hz, int):
            raise bad("rate_hz", "must be an integer number of samples per second")
        if not 1 <= self.rate_hz <= 10_000:
            raise bad("rate_hz", "must be between 1 and 10000")
        for key in (
            "range_g",
            "threshold_g",
            "pre_s",
            "post_s",
            "refractory_s",
            "peak_s",
            "min_turn_deg",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(key, "must be a number")
            if not math.isfinite(value) or value < 0:
                raise bad(key, "must be a finite number >= 0")
        if self.range_g <= 0:
            raise bad("range_g", "must be > 0")
        if not 0 < self.threshold_g < self.range_g:
            raise bad("threshold_g", f"must be > 0 and below range_g ({self.range_g})")
        if self.post_n < 1:
            raise bad("post_s", "must hold at least one sample at rate_hz")
        if self.peak_s > self.post_s:
            raise bad("peak_s", f"must not exceed post_s ({self.post_s})")
        if self.min_turn_deg > 180:
            raise bad("min_turn_deg", "must be an angle in degrees from 0 (off) to 180")

    @property
    def pre_n(self) -> int:
        """Samples before the impact sample."""
        return round(self.pre_s * self.rate_hz)

    @property
    def post_n(self) -> int:
        """Samples from the impact sample on (the impact sample included)."""
        return round(self.post_s * self.rate_hz)

    @property
    def refractory_n(self) -> int:
        """Least number of samples between two windows' impact samples."""
        return max(1, round(self.refractory_s * self.rate_hz))

    @property
    def peak_n(self) -> int:
        """Samples after the first crossing during which the impact sample may move."""
        return round(self.peak_s * self.rate_hz)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TriggerConfig:
        """Build from a profile's ``codec_options["trigger"]`` mapping.

        Missing keys take the defaults (a model file written before ``min_turn_deg``
        existed loads with the filter off); an unknown key or a bad value raises
        :class:`ProfileError` naming the key.
        """
        if not isinstance(options, Mapping):
            raise ProfileError(
                f"must be a mapping, got {type(options).__name__}", path=_OPTION_PATH
            )
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise ProfileError(
                    f"unknown key {key!r}; known: {sorted(known)}", path=f"{_OPTION_PATH}.{key}"
                )
        values: dict[str, Any] = {str(key): value for key, value in options.items()}
        rate = values.get("rate_hz")
        if isinstance(rate, float) and rate.is_integer():
            values["rate_hz"] = int(rate)  # YAML "50.0" means 50 samples per second
        return cls(**values)

    def to_options(self) -> dict[str, Any]:
        """The mapping :meth:`from_options` reads (for profiles and model metadata)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class ImpactWindow:
    """One uploaded window: per-axis samples in g (clipped, 1 mg steps) around an impact.

    ``trigger_index`` is the index of the impact sample in ``x``/``y``/``z``,
    ``peak_g`` its magnitude and ``start_sample`` the stream index of ``x[0]``.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    z: tuple[float, ...]
    trigger_index: int
    peak_g: float
    start_sample: int

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], start_sample: int = 0) -> ImpactWindow:
        """Rebuild a window from the values of an ``impact`` reading.

        Raises ValueError when the axes are missing, of unequal length, not numbers, or
        when ``trigger_index`` does not point inside them.
        """
        axes: list[tuple[float, ...]] = []
        for key in ("x", "y", "z"):
            raw = values.get(key)
            if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
                raise ValueError(f"impact value {key!r} must be a list of numbers")
            try:
                axes.append(tuple(float(v) for v in raw))
            except (TypeError, ValueError):
                raise ValueError(f"impact value {key!r} holds a non-number") from None
        if not len(axes[0]) == len(axes[1]) == len(axes[2]) or not axes[0]:
            raise ValueError("impact axes x, y, z must be non-empty and of equal length")
        index = values.get("trigger_index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError("impact value 'trigger_index' must be an integer")
        if not 0 <= index < len(axes[0]):
            raise ValueError(f"trigger_index {index} outside the window of {len(axes[0])}")
        peak = values.get("peak_g")
        if isinstance(peak, int | float) and not isinstance(peak, bool):
            peak_g = float(peak)
        else:
            peak_g = math.sqrt(axes[0][index] ** 2 + axes[1][index] ** 2 + axes[2][index] ** 2)
        return cls(axes[0], axes[1], axes[2], index, peak_g, start_sample)


def impact_values(window: ImpactWindow, cfg: TriggerConfig) -> dict[str, Any]:
    """The values of the ``impact`` reading a pendant uploads for ``window``."""
    return {
        "rate_hz": cfg.rate_hz,
        "range_g": cfg.range_g,
        "trigger_index": window.trigger_index,
        "peak_g": window.peak_g,
        "x": list(window.x),
        "y": list(window.y),
        "z": list(window.z),
    }


def posture_change_deg(window: ImpactWindow, rate_hz: int) -> float | None:
    """Angle in degrees between the mean acceleration of a window's first and last half second.

    Each end is ``rate_hz // 2`` samples (at least one, at most the whole window). None
    when either mean is too close to zero to have a direction. Pure Python twin of the
    posture-change measure the fall model's labelling uses (``stream.fall.table``).
    """
    n = len(window)
    k = min(n, max(1, rate_hz // 2))
    if k == 0:
        return None
    axes = (window.x, window.y, window.z)
    u = [sum(a[:k]) / k for a in axes]
    v = [sum(a[n - k :]) / k for a in axes]
    den = math.sqrt(sum(c * c for c in u)) * math.sqrt(sum(c * c for c in v))
    if den < 1e-9:
        return None
    cos = sum(a * b for a, b in zip(u, v, strict=True)) / den
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


@dataclass(slots=True)
class _Pending:
    anchor: int  # stream index of the impact sample
    peak: float  # its magnitude
    search_end: int  # first stream index at which the anchor no longer moves


class ImpactTrigger:
    """Streaming impact trigger: feed samples, get the windows a pendant would upload.

    State (history, open windows, refractory) is kept across :meth:`feed` calls, so a
    recording fed in one call or sample by sample gives the same windows.
    :attr:`suppressed` counts the windows the ``min_turn_deg`` filter kept back since the
    trigger was created (not reset by :meth:`flush`). It is not reported over the air:
    the pendant's status message has a fixed layout with no field for it.
    """

    def __init__(self, cfg: TriggerConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else TriggerConfig()
        self._buf: deque[Sample] = deque()
        self._buf_start = 0  # stream index of _buf[0]
        self._n = 0  # stream index of the next sample
        self._pending: list[_Pending] = []
        self._last_anchor: int | None = None
        self._last: Sample = (0.0, 0.0, 1.0)
        self.suppressed = 0

    def _reset(self) -> None:
        self._buf = deque()
        self._buf_start = 0
        self._n = 0
        self._pending = []
        self._last_anchor = None
        self._last = (0.0, 0.0, 1.0)

    @property
    def samples_seen(self) -> int:
        """Number of samples fed since creation (or the last :meth:`flush`)."""
        return self._n

    def _clean(self, sample: Sequence[float]) -> Sample:
        lim = self.cfg.range_g
        out: list[float] = []
        for i in range(3):
            v = float(sample[i])
            if math.isnan(v):
                # A corrupt sample holds the previous value rather than inventing a jump.
                v = self._last[i]
            v = min(lim, max(-lim, v))
            out.append(round(v * 1000.0) / 1000.0)
        return (out[0], out[1], out[2])

    def feed(self, samples: Iterable[Sequence[float]]) -> list[ImpactWindow]:
        """Feed (x, y, z) samples in g; returns the windows completed by them."""
        cfg = self.cfg
        out: list[ImpactWindow] = []
        for raw in samples:
            s = self._clean(raw)
            self._last = s
            i = self._n
            self._n += 1
            m = math.sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2])
            self._buf.append(s)

            searching = self._pending[-1] if self._pending else None
            if searching is not None and i < searching.search_end:
                if m > searching.peak:
                    searching.anchor, searching.peak = i, m
                    self._last_anchor = i
            elif m >= cfg.threshold_g and (
                self._last_anchor is None or i - self._last_anchor >= cfg.refractory_n
            ):
                self._pending.append(_Pending(i, m, i + cfg.peak_n))
                self._last_anchor = i

            while self._pending:
                p = self._pending[0]
                if i < p.search_end - 1 or i < p.anchor + cfg.post_n - 1:
                    break
                self._emit(self._window(p), out)
                self._pending.pop(0)
            self._trim()
        return out

    def flush(self) -> list[ImpactWindow]:
        """End of stream: emit open windows padded by repeating the last sample; reset.

        The ``min_turn_deg`` filter applies to these windows too.
        """
        out: list[ImpactWindow] = []
        for p in self._pending:
            self._emit(self._window(p, pad=True), out)
        self._reset()
        return out

    def _emit(self, window: ImpactWindow, out: list[ImpactWindow]) -> None:
        # Suppression happens only here, after the window is complete: the refractory
        # time and the impact samples of later windows do not depend on it.
        limit = self.cfg.min_turn_deg
        if limit > 0:
            turn = posture_change_deg(window, self.cfg.rate_hz)
            if turn is not None and turn < limit:
                self.suppressed += 1
                return
        out.append(window)

    def _window(self, p: _Pending, pad: bool = False) -> ImpactWindow:
        cfg = self.cfg
        start = max(self._buf_start, p.anchor - cfg.pre_n)
        end = p.anchor + cfg.post_n
        lo = start - self._buf_start
        hi = min(end, self._n) - self._buf_start
        rows = [self._buf[k] for k in range(lo, hi)]
        if pad and rows:
            rows.extend([rows[-1]] * (end - start - len(rows)))
        return ImpactWindow(
            x=tuple(r[0] for r in rows),
            y=tuple(r[1] for r in rows),
            z=tuple(r[2] for r in rows),
            trigger_index=p.anchor - start,
            peak_g=round(p.peak, 4),
            start_sample=start,
        )

    def _trim(self) -> None:
        # Keep pre_n samples of history for a window that may open at the next sample,
        # plus everything an open window still needs (its anchor only moves forward).
        keep_from = self._n - self.cfg.pre_n
        for p in self._pending:
            keep_from = min(keep_from, p.anchor - self.cfg.pre_n)
        while self._buf_start < keep_from and self._buf:
            self._buf.popleft()
            self._buf_start += 1


def resample(samples: Sequence[Sample], from_hz: float, to_hz: float) -> list[Sample]:
    """Resample (x, y, z) samples from ``from_hz`` to ``to_hz``.

    An integer downsampling ratio (200 -> 50 Hz) averages blocks of that many samples,
    which is what an accelerometer's output data rate filter does (an incomplete last
    block is dropped). Any other ratio interpolates linearly at ``k / to_hz`` seconds,
    for every such time inside the recording.
    """
    if not (from_hz > 0 and to_hz > 0 and math.isfinite(from_hz) and math.isfinite(to_hz)):
        raise ValueError(f"rates must be positive and finite, got {from_hz} -> {to_hz}")
    n = len(samples)
    if n == 0:
        return []
    ratio = from_hz / to_hz
    k = round(ratio)
    if abs(ratio - k) < 1e-9 and k >= 1:
        if k == 1:
            return [(float(s[0]), float(s[1]), float(s[2])) for s in samples]
        out: list[Sample] = []
        for start in range(0, n - k + 1, k):
            sx = sy = sz = 0.0
            for s in samples[start : start + k]:
                sx += s[0]
                sy += s[1]
                sz += s[2]
            out.append((sx / k, sy / k, sz / k))
        return out
    out = []
    last = n - 1
    j = 0
    while True:
        pos = j * ratio  # position in input samples
        if pos > last + 1e-9:
            break
        i0 = min(int(pos), last)
        frac = pos - i0
        a = samples[i0]
        if frac <= 1e-12 or i0 == last:
            out.append((float(a[0]), float(a[1]), float(a[2])))
        else:
            nxt = samples[i0 + 1]
            out.append(
                (
                    a[0] + (nxt[0] - a[0]) * frac,
                    a[1] + (nxt[1] - a[1]) * frac,
                    a[2] + (nxt[2] - a[2]) * frac,
                )
            )
        j += 1
    return out
