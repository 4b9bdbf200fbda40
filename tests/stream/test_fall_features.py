"""Fall features: orientation invariance, robustness to odd windows, resampling twin."""

from __future__ import annotations

import numpy as np
import pytest

from device_profiles.pendant_trigger import ImpactTrigger, TriggerConfig, resample
from stream.fall import synthetic as S
from stream.fall.data import resample_array, trigger_windows
from stream.fall.errors import FallDataError
from stream.fall.features import FEATURE_NAMES, window_features, window_from_values
from stream.fall.table import random_rotation

CFG = TriggerConfig()


def _fall_window(seed: int = 0, rotation: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    sig = S.with_noise(S.fall(50), rng)
    if rotation is not None:
        sig = sig @ rotation.T
    (w,) = trigger_windows(sig, CFG)
    return np.column_stack([w.x, w.y, w.z]), w.trigger_index


def test_feature_vector_matches_names_and_is_finite() -> None:
    acc, t = _fall_window()
    f = window_features(acc, t, 50)
    assert f.shape == (len(FEATURE_NAMES),)
    assert np.all(np.isfinite(f))
    named = dict(zip(FEATURE_NAMES, f, strict=True))
    assert named["peak_g"] == pytest.approx(5.0, abs=0.05)
    assert 80 < named["orientation_change_deg"] < 100  # standing -> lying
    assert named["freefall_s"] >= 0.2
    assert named["after_still_frac"] > 0.8


@pytest.mark.parametrize("seed", range(5))
def test_features_are_invariant_to_sensor_rotation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    acc, t = _fall_window(seed=seed)
    rot = random_rotation(rng)
    # Rotate the uploaded window itself (values stay well inside the +-8 g range).
    f0 = window_features(acc, t, 50)
    f1 = window_features(acc @ rot.T, t, 50)
    np.testing.assert_allclose(f1, f0, rtol=1e-6, atol=1e-6)


def test_walking_windows_differ_from_a_fall() -> None:
    rng = np.random.default_rng(3)
    walk = S.with_noise(S.walking(20, 50, step_g=0.9), rng)
    windows = trigger_windows(walk, CFG)
    assert windows, "strong steps cross the 1.6 g threshold"
    f = window_features(np.column_stack([windows[3].x, windows[3].y, windows[3].z]), 150, 50)
    named = dict(zip(FEATURE_NAMES, f, strict=True))
    assert named["orientation_change_deg"] < 15
    assert named["other_peaks"] >= 4
    assert named["periodicity"] > 0.5


def test_gentle_walking_does_not_trigger() -> None:
    walk = S.with_noise(S.walking(60, 50, step_g=0.35), np.random.default_rng(4))
    assert trigger_windows(walk, CFG) == []


@pytest.mark.parametrize(("n", "t"), [(2, 0), (2, 1), (5, 4), (40, 0), (40, 39)])
def test_tiny_and_edge_windows_give_finite_features(n: int, t: int) -> None:
    acc = np.tile([0.0, 0.0, 1.0], (n, 1))
    acc[t] = [0.0, 2.0, 1.0]
    f = window_features(acc, t, 50)
    assert np.all(np.isfinite(f))


@pytest.mark.parametrize(
    ("acc", "t", "rate"),
    [
        (np.zeros((1, 3)), 0, 50),
        (np.zeros((10, 2)), 0, 50),
        (np.zeros((10, 3)), 10, 50),
        (np.zeros((10, 3)), -1, 50),
        (np.full((10, 3), np.nan), 0, 50),
        (np.zeros((10, 3)), 0, 0),
    ],
)
def test_malformed_windows_raise_typed_errors(acc: np.ndarray, t: int, rate: float) -> None:
    with pytest.raises(FallDataError):
        window_features(acc, t, rate)


def test_window_from_values_rejects_garbage() -> None:
    with pytest.raises(FallDataError):
        window_from_values({"x": [1.0], "y": [1.0], "z": "nope", "trigger_index": 0})
    with pytest.raises(FallDataError):
        window_from_values(
            {"x": [1.0], "y": [1.0], "z": [1.0], "trigger_index": 0, "rate_hz": "fast"}
        )


@pytest.mark.parametrize(
    ("src", "dst"), [(200, 50), (100, 50), (50, 50), (25, 50), (80, 50), (64, 50)]
)
def test_numpy_resample_equals_the_pendant_resample(src: int, dst: int) -> None:
    rng = np.random.default_rng(src)
    a = rng.normal(size=(203, 3))
    pure = np.asarray(resample([tuple(r) for r in a.tolist()], src, dst))
    fast = resample_array(a, src, dst)
    assert fast.shape == pure.shape
    np.testing.assert_allclose(fast, pure, rtol=1e-12, atol=1e-12)


def test_trigger_windows_equals_streaming_trigger() -> None:
    sig = S.with_noise(np.vstack([S.walking(10, 50, 0.9), S.fall(50)]), np.random.default_rng(5))
    trig = ImpactTrigger(CFG)
    streamed = []
    for k in range(0, len(sig), 37):  # arbitrary chunking
        streamed += trig.feed([tuple(r) for r in sig[k : k + 37].tolist()])
    streamed += trig.flush()
    assert trigger_windows(sig, CFG) == streamed


def test_posture_change_twin_matches_the_labelling_measure() -> None:
    # The pendant's posture filter (pure Python) and the labelling rule (numpy) measure
    # the same angle, so the filter's setting can be chosen from labelled windows.
    from device_profiles.pendant_trigger import posture_change_deg
    from stream.fall.table import _posture_change_deg

    rng = np.random.default_rng(3)
    sig = np.vstack(
        [
            S.with_noise(S.walking(20, 50, step_g=0.9), rng),
            S.with_noise(S.fall(50), rng),
            S.with_noise(S.fall(50, peak_g=3.0) @ random_rotation(rng).T, rng),
        ]
    )
    windows = trigger_windows(sig, CFG)
    assert len(windows) >= 5
    angles = [posture_change_deg(w, 50) for w in windows]
    assert angles == pytest.approx([_posture_change_deg(w, 50) for w in windows], abs=1e-6)
    assert min(a or 0.0 for a in angles) < 10 and max(a or 0.0 for a in angles) > 80
