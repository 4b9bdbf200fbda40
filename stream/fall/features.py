"""Orientation-invariant features of one impact window.

A pendant hangs or clips wherever the resident puts it, so no feature may depend on
which axis points where: every feature is built from the acceleration magnitude, from
angles between the window's own gravity estimates, or from rotation-invariant
statistics (the trace of a covariance, norms of differences). Rotating a window by any
3-D rotation leaves its features unchanged (tested), up to the sensor's per-axis clipping.

The timeline around the impact sample ``t`` (durations in seconds, so any rate works):

    [ before: start .. t-1 ) [ fall: t-1 .. t ) [ impact: t-0.25 .. t+0.25 ]
    [ settle: t+0.25 .. t+1 ) [ after: t+1 .. end )

A fall typically shows a drop of the magnitude below 1 g during "fall" (free fall, the
body gaining downward speed), a hard impact, a posture change between "before" and
"after", and little movement "after". Sitting down hard, lying down quickly or a
stumble each lack some of these; jogging and stairs show periodic peaks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from device_profiles.pendant_trigger import ImpactWindow
from stream.fall.errors import FallDataError

FloatArray = npt.NDArray[np.float64]

#: Bumped whenever a feature's definition changes: a model records the version it was
#: trained with and refuses to score features of another one.
FEATURE_VERSION = 7

SUMMARY_NAMES: tuple[str, ...] = (
    "peak_g",  # magnitude at the impact sample
    "window_max_g",  # highest magnitude anywhere in the window
    "impact_energy",  # sum of (|a| - 1)^2 over +-0.25 s, g^2 s
    "peak_width_s",  # time around the impact with |a| above half-way to the peak
    "fall_min_g",  # lowest magnitude in the second before the impact (free fall)
    "fall_mean_g",  # mean magnitude in the second before the impact
    "freefall_s",  # time below 0.6 g in the 1.5 s before the impact
    "fall_velocity_mag",  # most negative running integral of (|a| - 1 g) before impact, g s
    "fall_velocity_vert",  # same, of acceleration projected on the "before" gravity, g s
    "orientation_change_deg",  # angle between mean acceleration before and after
    "orientation_end_deg",  # angle between mean acceleration before and in the last 0.5 s
    "orientation_start_deg",  # angle between the window's first 0.5 s and "after"
    "orientation_max_deg",  # largest angle from the first 0.5 s anywhere after the impact
    "rotation_path_deg",  # angular path of the smoothed acceleration direction, t-1..t+1
    "transition_s",  # time the posture change took (20 % to 80 % of the way)
    "turn_at_impact",  # share of the posture change done at the impact sample
    "after_std_g",  # std of the magnitude after (stillness)
    "after_dev_g",  # mean | |a| - its median | after
    "after_cov_trace",  # trace of the covariance of a after (rotation invariant)
    "after_still_frac",  # fraction of "after" samples near the resting magnitude, low jerk
    "after_max_g",  # highest magnitude after, relative to rest (second impact, getting up)
    "after_jerk",  # mean |da/dt| after, g/s
    "settle_std_g",  # std of the magnitude while settling (t+0.25 .. t+1)
    "before_std_g",  # std of the magnitude before (walking vs still)
    "before_cov_trace",  # trace of the covariance of a before
    "jerk_max",  # highest |da/dt| within +-0.25 s of the impact, g/s
    "other_peaks",  # local maxima >= 1.5 g more than 0.3 s away from the impact
    "periodicity",  # highest autocorrelation of |a| at lags 0.3-1.2 s
    "pre_post_ratio",  # before_std_g / (after_std_g + 0.01): activity stopped?
)

#: The shape of the event: 0.2 s bins from 2 s before to 3 s after the impact, each with
#: the highest and lowest magnitude and the angle of its mean acceleration to the
#: window's first and last half second (so: invariant to how the sensor is worn).
PROFILE_BIN_S = 0.2
PROFILE_FROM_S = -2.0
PROFILE_BINS = 25
_PROFILE_STATS = ("max_g", "min_g", "from_start_deg", "to_end_deg")
PROFILE_NAMES: tuple[str, ...] = tuple(
    f"bin{round((PROFILE_FROM_S + b * PROFILE_BIN_S) * 10):+03d}_{stat}"
    for b in range(PROFILE_BINS)
    for stat in _PROFILE_STATS
)
FEATURE_NAMES = SUMMARY_NAMES + PROFILE_NAMES

_SEGMENT_FLOOR = 2  # samples: statistics over fewer are meaningless


def _seg(a: FloatArray, lo: int, hi: int) -> FloatArray:
    """a[lo:hi] clipped to the array, widened to at least a couple of samples."""
    n = len(a)
    lo = max(0, min(lo, n - 1))
    hi = max(lo + 1, min(hi, n))
    if hi - lo < _SEGMENT_FLOOR:
        lo = max(0, hi - _SEGMENT_FLOOR)
        hi = min(n, lo + _SEGMENT_FLOOR)
    return a[lo:hi]


def _angle_deg(u: FloatArray, v: FloatArray) -> float:
    nu = float(np.linalg.norm(u))
    nv = float(np.linalg.norm(v))
    if nu < 1e-6 or nv < 1e-6:
        return 0.0
    c = float(np.dot(u, v)) / (nu * nv)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _cov_trace(a: FloatArray) -> float:
    if len(a) < 2:
        return 0.0
    return float(np.sum(np.var(a, axis=0)))


def _moving_mean(a: FloatArray, k: int) -> FloatArray:
    if k <= 1 or len(a) < k:
        return a
    c = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), a]), axis=0)
    return np.asarray((c[k:] - c[:-k]) / k, dtype=np.float64)


def _rest_level(m: FloatArray) -> float:
    """The magnitude of gravity as this sensor reports it at rest (its median), bounded.

    Sensors have gain and offset errors of several percent (one SisFall subject's lies
    at 1.17 g): comparing to this level instead of to exactly 1 g keeps free-fall and
    stillness features device-independent.
    """
    return float(np.clip(np.median(m), 0.8, 1.25)) if len(m) else 1.0


def _profile(a: FloatArray, m: FloatArray, t: int, r: float) -> FloatArray:
    n = len(a)
    k = max(1, round(0.5 * r))
    u0 = a[:k].mean(axis=0)
    u1 = a[-k:].mean(axis=0)
    u0 = u0 / max(float(np.linalg.norm(u0)), 1e-6)
    u1 = u1 / max(float(np.linalg.norm(u1)), 1e-6)
    width = max(1, round(PROFILE_BIN_S * r))
    first = t + round(PROFILE_FROM_S * r)
    out = np.empty((PROFILE_BINS, len(_PROFILE_STATS)))
    for b in range(PROFILE_BINS):
        lo = min(max(first + b * width, 0), n - 1)  # bins outside the window repeat its edge
        hi = max(lo + 1, min(first + (b + 1) * width, n))
        v = a[lo:hi].mean(axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-6)
        out[b] = (
            m[lo:hi].max(),
            m[lo:hi].min(),
            math.degrees(math.acos(max(-1.0, min(1.0, float(v @ u0))))),
            math.degrees(math.acos(max(-1.0, min(1.0, float(v @ u1))))),
        )
    return out.reshape(-1)


def window_features(acc: FloatArray, trigger_index: int, rate_hz: float) -> FloatArray:
    """Feature vector (ordered as :data:`FEATURE_NAMES`) of one window.

    ``acc`` is (n, 3) in g, ``trigger_index`` the impact sample. Raises
    :class:`FallDataError` on a malformed window.
    """
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or len(a) < 2:
        raise FallDataError(f"an impact window must be (n >= 2, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FallDataError("an impact window holds NaN or infinite values")
    n = len(a)
    t = int(trigger_index)
    if not 0 <= t < n:
        raise FallDataError(f"trigger_index {t} outside a window of {n} samples")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise FallDataError(f"rate_hz must be positive, got {rate_hz}")
    r = float(rate_hz)

    def s(sec: float) -> int:
        return round(sec * r)

    # Express the window in units of this sensor's own gravity reading: sensors differ
    # in gain by several percent, and the model must not learn one sensor's scale.
    a = a / _rest_level(np.linalg.norm(a, axis=1))
    m = np.linalg.norm(a, axis=1)
    peak = float(m[t])

    before = _seg(a, 0, t - s(1.0))
    fall = _seg(a, t - s(1.0), t)
    fall_m = np.linalg.norm(fall, axis=1)
    impact_m = np.linalg.norm(_seg(a, t - s(0.25), t + s(0.25) + 1), axis=1)
    settle_m = np.linalg.norm(_seg(a, t + s(0.25), t + s(1.0)), axis=1)
    after = _seg(a, t + s(1.0), n)
    after_m = np.linalg.norm(after, axis=1)
    before_m = np.linalg.norm(before, axis=1)
    last = _seg(a, n - s(0.5), n)
    g_b = _rest_level(before_m)
    g_a = _rest_level(after_m)

    # Width of the impact: contiguous samples around t above half-way from 1 g to the peak.
    half = 1.0 + 0.5 * max(0.0, peak - 1.0)
    lo = t
    while lo > 0 and m[lo - 1] >= half:
        lo -= 1
    hi = t
    while hi < n - 1 and m[hi + 1] >= half:
        hi += 1
    peak_width = (hi - lo + 1) / r

    ff_region = m[max(0, t - s(1.5)) : t] / g_b
    freefall_s = float(np.sum(ff_region < 0.6)) / r

    # Velocity proxies: integrate the specific force minus gravity over the last second.
    vel_mag = float(min(0.0, np.min(np.cumsum(fall_m / g_b - 1.0)) / r))
    g_before = before.mean(axis=0)
    g_norm = float(np.linalg.norm(g_before))
    if g_norm > 1e-6:
        vert = fall @ (g_before / g_norm) / g_b - 1.0
        vel_vert = float(min(0.0, np.min(np.cumsum(vert)) / r))
    else:
        vel_vert = 0.0

    g_after = after.mean(axis=0)
    orient = _angle_deg(g_before, g_after)
    orient_end = _angle_deg(g_before, last.mean(axis=0))
    # A fall from a seat starts turning seconds before the impact: the window's first
    # half second is the best view of the posture before it.
    g_start = _seg(a, 0, s(0.5)).mean(axis=0)
    orient_start = _angle_deg(g_start, g_after)
    sm_after = _moving_mean(_seg(a, t, n), max(1, s(0.2)))
    orient_max = max((_angle_deg(g_start, v) for v in sm_after), default=0.0)

    # The smoothed (0.2 s) direction of acceleration: its angular path from t-1 s to
    # t+1 s, how long the posture change took and how much of it was done at the impact.
    smooth = _moving_mean(a, max(1, s(0.2)))
    shift = (len(a) - len(smooth)) // 2  # smooth[k] is centred on a[k + shift]
    norms = np.linalg.norm(smooth, axis=1)
    dirs = smooth / np.maximum(norms, 1e-6)[:, None]
    p_lo = max(0, t - s(1.0) - shift)
    p_hi = max(p_lo + 1, min(len(dirs), t + s(1.0) - shift + 1))
    path = dirs[p_lo:p_hi][norms[p_lo:p_hi] > 0.2]
    if len(path) >= 2:
        cosines = np.clip(np.sum(path[1:] * path[:-1], axis=1), -1.0, 1.0)
        rotation_path = float(np.degrees(np.sum(np.arccos(cosines))))
    else:
        rotation_path = 0.0
    transition_s = 0.0
    turn_at_impact = 0.0
    ub = g_before / max(g_norm, 1e-6)
    if orient > 10.0:
        to_before = np.degrees(np.arccos(np.clip(dirs @ ub, -1.0, 1.0)))
        frac = to_before / orient
        left = np.flatnonzero(frac >= 0.2)
        reached = np.flatnonzero(frac >= 0.8)
        if len(left) and len(reached):
            later = reached[reached >= left[0]]
            if len(later):
                transition_s = float(later[0] - left[0]) / r
        ti = min(len(frac) - 1, max(0, t - shift))
        turn_at_impact = float(np.clip(frac[ti], 0.0, 1.5))

    jerk = np.linalg.norm(np.diff(a, axis=0), axis=1) * r  # g/s, between samples
    j_lo, j_hi = max(0, t - s(0.25)), min(len(jerk), t + s(0.25) + 1)
    jerk_max = float(np.max(jerk[j_lo:j_hi])) if j_hi > j_lo else 0.0
    a_start = min(len(jerk), t + s(1.0))
    after_jerk_arr = jerk[a_start:]
    after_jerk = float(np.mean(after_jerk_arr)) if len(after_jerk_arr) else 0.0
    near_rest = np.abs(after_m - g_a) < 0.05
    if len(after_jerk_arr):
        k = min(len(after_jerk_arr), len(near_rest))
        still_frac = float(np.mean(near_rest[:k] & (after_jerk_arr[:k] < 2.0)))
    else:
        still_frac = float(np.mean(near_rest))

    # Periodic peaks (gait, jogging, stairs) away from the impact.
    interior = (m[1:-1] >= m[:-2]) & (m[1:-1] > m[2:]) & (m[1:-1] >= 1.5)
    peaks_idx = np.flatnonzero(interior) + 1
    other_peaks = float(np.sum(np.abs(peaks_idx - t) > s(0.3)))
    mc = m - m.mean()
    denom = float(np.dot(mc, mc))
    periodicity = 0.0
    if denom > 1e-9:
        for lag in range(max(1, s(0.3)), min(n - 1, s(1.2)) + 1):
            c = float(np.dot(mc[:-lag], mc[lag:])) / denom * n / (n - lag)
            periodicity = max(periodicity, c)

    before_std = float(np.std(before_m))
    after_std = float(np.std(after_m))
    feats = (
        peak,
        float(np.max(m)),
        float(np.sum((impact_m - 1.0) ** 2) / r),
        peak_width,
        float(np.min(fall_m)) / g_b,
        float(np.mean(fall_m)) / g_b,
        freefall_s,
        vel_mag,
        vel_vert,
        orient,
        orient_end,
        orient_start,
        orient_max,
        rotation_path,
        transition_s,
        turn_at_impact,
        after_std,
        float(np.mean(np.abs(after_m - g_a))),
        _cov_trace(after),
        still_frac,
        float(np.max(after_m)) - g_a,
        after_jerk,
        float(np.std(settle_m)),
        before_std,
        _cov_trace(before),
        jerk_max,
        other_peaks,
        periodicity,
        before_std / (after_std + 0.01),
    )
    return np.concatenate([np.asarray(feats, dtype=np.float64), _profile(a, m, t, r)])


def window_from_values(values: Mapping[str, Any]) -> tuple[FloatArray, int, float]:
    """(acc, trigger_index, rate_hz) from the values of an ``impact`` reading.

    Raises :class:`FallDataError` when the values do not describe a window.
    """
    try:
        w = ImpactWindow.from_values(values)
    except ValueError as exc:
        raise FallDataError(str(exc)) from None
    rate = values.get("rate_hz", 50)
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise FallDataError("impact value 'rate_hz' must be a number")
    return np.column_stack([w.x, w.y, w.z]).astype(np.float64), w.trigger_index, float(rate)


def impact_window_array(w: ImpactWindow) -> FloatArray:
    """An :class:`ImpactWindow`'s samples as an (n, 3) array in g."""
    return np.column_stack([w.x, w.y, w.z]).astype(np.float64)
