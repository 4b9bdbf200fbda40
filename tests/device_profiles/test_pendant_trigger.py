"""The pendant's on-device impact trigger: windows, streaming state, resampling."""

from __future__ import annotations

import math

import pytest

from device_profiles.errors import ProfileError
from device_profiles.pendant_trigger import (
    ImpactTrigger,
    ImpactWindow,
    TriggerConfig,
    impact_values,
    posture_change_deg,
    resample,
)

STILL = (0.0, 0.0, 1.0)


def _walk(seconds: float, rate: int = 50, peak: float = 1.35) -> list[tuple[float, float, float]]:
    """Walking at ~2 steps/s: vertical magnitude oscillating between 2 - peak and peak g."""
    out = []
    for i in range(int(seconds * rate)):
        t = i / rate
        amp = peak - 1.0
        out.append((0.05 * math.sin(2 * math.pi * t), 0.0, 1.0 + amp * math.sin(4 * math.pi * t)))
    return out


def _fall(rate: int = 50) -> list[tuple[float, float, float]]:
    """4 s still, 0.4 s free fall, a 3 g impact, then lying on the side (gravity on x)."""
    s = [STILL] * (4 * rate)
    s += [(0.0, 0.0, 0.2)] * int(0.4 * rate)
    s += [(1.5, 0.5, 2.5)]
    s += [(1.0, 0.0, 0.0)] * (5 * rate)
    return s


def test_defaults_are_valid_and_round_trip_through_options() -> None:
    cfg = TriggerConfig()
    assert cfg.rate_hz == 50 and cfg.range_g == 8.0
    assert 1.0 < cfg.threshold_g < 2.0
    assert TriggerConfig.from_options(cfg.to_options()) == cfg
    assert TriggerConfig.from_options({}) == cfg
    assert TriggerConfig.from_options({"rate_hz": 25.0}).rate_hz == 25


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"threshold": 2.0}, "threshold"),
        ({"threshold_g": "high"}, "threshold_g"),
        ({"threshold_g": 9.0}, "threshold_g"),
        ({"rate_hz": 0}, "rate_hz"),
        ({"rate_hz": 50.5}, "rate_hz"),
        ({"pre_s": -1}, "pre_s"),
        ({"post_s": float("nan")}, "post_s"),
        ({"refractory_s": True}, "refractory_s"),
        ({"peak_s": 5.0, "post_s": 4.0}, "peak_s"),
        ({"min_turn_deg": -1}, "min_turn_deg"),
        ({"min_turn_deg": 181}, "min_turn_deg"),
        ({"min_turn_deg": "20"}, "min_turn_deg"),
        ({"min_turn_deg": False}, "min_turn_deg"),
        ({"min_turn_deg": float("inf")}, "min_turn_deg"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ProfileError) as err:
        TriggerConfig.from_options(options)
    assert err.value.path == f"codec_options.trigger.{key}"
    assert key in str(err.value)


def test_min_turn_deg_defaults_off_and_round_trips() -> None:
    # A model file written before the option existed has no such key: the filter is off.
    old = {k: v for k, v in TriggerConfig().to_options().items() if k != "min_turn_deg"}
    assert TriggerConfig.from_options(old).min_turn_deg == 0
    cfg = TriggerConfig.from_options({"min_turn_deg": 20})
    assert cfg.to_options()["min_turn_deg"] == 20
    assert TriggerConfig.from_options(cfg.to_options()) == cfg
    assert TriggerConfig(min_turn_deg=180).min_turn_deg == 180


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(ProfileError):
        TriggerConfig.from_options([1, 2])  # type: ignore[arg-type]


def test_still_and_walking_do_not_trigger() -> None:
    trig = ImpactTrigger()
    assert trig.feed([STILL] * 500) == []
    assert trig.feed(_walk(60)) == []
    assert trig.flush() == []


def test_fall_gives_one_window_centred_on_the_impact() -> None:
    cfg = TriggerConfig()
    trig = ImpactTrigger(cfg)
    samples = _fall()
    windows = trig.feed(samples) + trig.flush()
    assert len(windows) == 1
    w = windows[0]
    impact = 4 * 50 + 20
    assert w.trigger_index == cfg.pre_n
    assert w.start_sample == impact - cfg.pre_n
    assert len(w) == cfg.pre_n + cfg.post_n
    assert (w.x[w.trigger_index], w.y[w.trigger_index], w.z[w.trigger_index]) == (1.5, 0.5, 2.5)
    assert w.peak_g == pytest.approx(math.sqrt(1.5**2 + 0.5**2 + 2.5**2), abs=1e-3)
    # The samples before the impact are the free fall, after it the lying posture.
    assert w.z[w.trigger_index - 1] == 0.2
    assert w.x[-1] == 1.0


def test_window_is_emitted_exactly_when_post_samples_arrived() -> None:
    cfg = TriggerConfig()
    trig = ImpactTrigger(cfg)
    samples = _fall()
    impact = 4 * 50 + 20
    assert trig.feed(samples[: impact + cfg.post_n - 1]) == []
    got = trig.feed(samples[impact + cfg.post_n - 1 : impact + cfg.post_n])
    assert len(got) == 1


def test_sample_by_sample_equals_one_call() -> None:
    samples = _walk(5) + _fall() + _walk(5, peak=1.9) + _fall()
    whole = ImpactTrigger()
    expected = whole.feed(samples) + whole.flush()
    one = ImpactTrigger()
    got: list[ImpactWindow] = []
    for s in samples:
        got += one.feed([s])
    got += one.flush()
    assert got == expected
    assert len(expected) >= 2


def test_impact_sample_moves_to_a_higher_peak_within_peak_s() -> None:
    cfg = TriggerConfig(peak_s=1.0)
    s = [STILL] * 150
    s[100] = (0.0, 0.0, 1.8)  # a step crosses the threshold first
    s[130] = (0.0, 3.0, 1.0)  # the body's impact 0.6 s later
    trig = ImpactTrigger(cfg)
    windows = trig.feed(s + [STILL] * 300)
    assert len(windows) == 1
    assert windows[0].start_sample + windows[0].trigger_index == 130
    assert windows[0].peak_g == pytest.approx(math.sqrt(10.0), abs=1e-3)


def test_refractory_and_overlapping_windows() -> None:
    cfg = TriggerConfig(refractory_s=2.0, peak_s=0.2)
    s = [STILL] * 600
    for i in (100, 150, 220, 400):
        s[i] = (0.0, 0.0, 2.5)
    windows = ImpactTrigger(cfg).feed(s)
    anchors = [w.start_sample + w.trigger_index for w in windows]
    # 150 falls within the refractory period of 100; 220 does not and overlaps its window.
    assert anchors == [100, 220, 400]


def test_clipping_quantization_and_short_first_window() -> None:
    cfg = TriggerConfig()
    s = [(0.0, 0.0, 1.0)] * 10 + [(12.0, -0.12345, 1.00049)] + [STILL] * 300
    (w,) = ImpactTrigger(cfg).feed(s)
    assert w.trigger_index == 10 and w.start_sample == 0
    assert w.x[10] == 8.0 and w.y[10] == -0.123 and w.z[10] == 1.0


def test_nan_sample_holds_previous_value() -> None:
    s = [STILL] * 20 + [(float("nan"), 0.0, float("nan"))] + [STILL] * 20
    assert ImpactTrigger().feed(s) == []


def test_flush_pads_with_last_sample_and_resets() -> None:
    cfg = TriggerConfig()
    s = [STILL] * 200 + [(0.0, 0.0, 3.0)] + [(1.0, 0.0, 0.0)] * 10
    trig = ImpactTrigger(cfg)
    assert trig.feed(s) == []
    (w,) = trig.flush()
    assert len(w) == cfg.pre_n + cfg.post_n
    assert w.x[-1] == 1.0 and w.x[w.trigger_index + 11] == 1.0
    assert trig.samples_seen == 0
    assert trig.flush() == []


def test_impact_values_round_trip() -> None:
    cfg = TriggerConfig()
    (w,) = ImpactTrigger(cfg).feed(_fall())
    values = impact_values(w, cfg)
    assert set(values) == {"rate_hz", "range_g", "trigger_index", "peak_g", "x", "y", "z"}
    back = ImpactWindow.from_values(values, start_sample=w.start_sample)
    assert back == w


@pytest.mark.parametrize(
    "values",
    [
        {"x": [1.0], "y": [1.0], "trigger_index": 0},
        {"x": [1.0], "y": [1.0], "z": [1.0, 2.0], "trigger_index": 0},
        {"x": [1.0], "y": [1.0], "z": ["a"], "trigger_index": 0},
        {"x": [1.0], "y": [1.0], "z": [1.0], "trigger_index": 3},
        {"x": [1.0], "y": [1.0], "z": [1.0], "trigger_index": "0"},
    ],
)
def test_from_values_rejects_malformed(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImpactWindow.from_values(values)


def test_resample_block_average_for_integer_ratio() -> None:
    s = [(float(i), 2.0 * i, 1.0) for i in range(10)]
    out = resample(s, 200, 50)
    assert out == [(1.5, 3.0, 1.0), (5.5, 11.0, 1.0)]  # the last 2 samples are dropped
    assert resample(s, 50, 50) == s
    assert resample([], 200, 50) == []


def test_resample_linear_interpolation_otherwise() -> None:
    s = [(float(i), 0.0, -float(i)) for i in range(5)]  # 25 Hz ramp, 0.16 s long
    up = resample(s, 25, 50)
    assert len(up) == 9
    assert up[1] == pytest.approx((0.5, 0.0, -0.5))
    assert up[-1] == pytest.approx((4.0, 0.0, -4.0))
    down = resample([(float(i), 0.0, 0.0) for i in range(16)], 80, 50)
    assert [p[0] for p in down] == pytest.approx(
        [0.0, 1.6, 3.2, 4.8, 6.4, 8.0, 9.6, 11.2, 12.8, 14.4]
    )


def test_resample_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        resample([STILL], 0, 50)


# -- posture filter (min_turn_deg) ------------------------------------------------------


def _jog(seconds: float, rate: int = 50) -> list[tuple[float, float, float]]:
    """Brisk activity: 2.4 g peaks three times a second, upright the whole time."""
    out = []
    for i in range(int(seconds * rate)):
        t = i / rate
        out.append(
            (0.15 * math.sin(3 * math.pi * t), 0.1, 1.0 + 1.4 * max(0.0, math.sin(6 * math.pi * t)))
        )
    return out


def _session() -> list[tuple[float, float, float]]:
    """Jogging, a fall, lying, getting up, jogging again."""
    up = [(0.0, 0.0, 1.0)] * 100
    return _jog(30) + _fall() + up + _jog(20) + _fall() + [(0.0, 1.0, 0.0)] * 50


def _anchors(windows: list[ImpactWindow]) -> list[int]:
    return [w.start_sample + w.trigger_index for w in windows]


def test_posture_change_deg() -> None:
    (fall,) = ImpactTrigger().feed(_fall())
    turn = posture_change_deg(fall, 50)
    assert turn is not None and 80 < turn <= 90  # standing -> lying on the side
    jog = ImpactTrigger().feed(_jog(20))
    assert jog and all((posture_change_deg(w, 50) or 0) < 5 for w in jog)
    # Half a second at each end: a turn in the middle of the window does not count.
    n = 350
    x = tuple(1.0 if 100 <= k < 200 else 0.0 for k in range(n))
    z = tuple(0.0 if 100 <= k < 200 else 1.0 for k in range(n))
    middle = ImpactWindow(x, (0.0,) * n, z, 150, 2.0, 0)
    assert posture_change_deg(middle, 50) == pytest.approx(0.0)
    ends = ImpactWindow(z, (0.0,) * n, x, 150, 2.0, 0)  # lying at both ends, upright between
    assert posture_change_deg(ends, 50) == pytest.approx(0.0)
    # No direction at one end (all zero): undefined, so the trigger uploads it.
    blank = ImpactWindow((0.0,) * n, (0.0,) * n, (0.0,) * 300 + (1.0,) * 50, 150, 2.0, 0)
    assert posture_change_deg(blank, 50) is None
    assert posture_change_deg(ImpactWindow((1.0,), (0.0,), (0.0,), 0, 1.0, 0), 50) == 0.0


def test_walking_windows_are_suppressed_and_counted() -> None:
    plain = ImpactTrigger()
    every = plain.feed(_jog(60)) + plain.flush()
    assert len(every) >= 20  # brisk activity fires the trigger again and again
    assert plain.suppressed == 0
    trig = ImpactTrigger(TriggerConfig(min_turn_deg=20))
    assert trig.feed(_jog(60)) + trig.flush() == []
    assert trig.suppressed == len(every)


def test_a_fall_is_uploaded_through_the_filter() -> None:
    for deg in (20.0, 45.0, 80.0):
        trig = ImpactTrigger(TriggerConfig(min_turn_deg=deg))
        (w,) = trig.feed(_fall()) + trig.flush()
        assert w == ImpactTrigger().feed(_fall())[0]
        assert trig.suppressed == 0
    # A turn below the setting is not enough.
    trig = ImpactTrigger(TriggerConfig(min_turn_deg=100))
    assert trig.feed(_fall()) + trig.flush() == []
    assert trig.suppressed == 1


@pytest.mark.parametrize("deg", [10.0, 20.0, 30.0, 60.0, 179.0])
def test_filtered_windows_are_a_subset_with_the_same_anchors(deg: float) -> None:
    samples = _session()
    plain = ImpactTrigger()
    every = plain.feed(samples) + plain.flush()
    trig = ImpactTrigger(TriggerConfig(min_turn_deg=deg))
    kept = trig.feed(samples) + trig.flush()
    assert all(w in every for w in kept)
    assert _anchors(kept) == sorted(_anchors(kept))
    assert len(kept) + trig.suppressed == len(every)
    expected = [w for w in every if (posture_change_deg(w, 50) or 180.0) >= deg]
    assert kept == expected
    if deg <= 60:
        # Both falls (about 85-90 degrees of turn) get through; the jogging does not.
        assert len(kept) >= 2 and trig.suppressed > 0


def test_suppressed_window_holds_the_refractory_time() -> None:
    # A step at 100 opens a window that is suppressed; a fall impact 1 s later falls in
    # its refractory time, so no window of its own, with or without the filter.
    cfg = TriggerConfig(min_turn_deg=20, peak_s=0.2)
    s = [STILL] * 100 + [(0.0, 0.0, 2.0)] + [STILL] * 49 + [(0.0, 0.0, 3.0)] + [STILL] * 400
    plain = ImpactTrigger(TriggerConfig(peak_s=0.2)).feed(s)
    assert _anchors(plain) == [100]
    trig = ImpactTrigger(cfg)
    assert trig.feed(s) == [] and trig.suppressed == 1


def test_flush_applies_the_filter() -> None:
    cfg = TriggerConfig(min_turn_deg=20)
    trig = ImpactTrigger(cfg)
    assert trig.feed([STILL] * 200 + [(0.0, 0.0, 3.0)] + [STILL] * 10) == []
    assert trig.flush() == [] and trig.suppressed == 1
    # Lying after the impact, cut short: padded with the lying sample, so uploaded.
    assert trig.feed([STILL] * 200 + [(0.0, 0.0, 3.0)] + [(1.0, 0.0, 0.0)] * 10) == []
    (w,) = trig.flush()
    assert w.x[-1] == 1.0 and trig.suppressed == 1


def test_filtered_sample_by_sample_equals_one_call() -> None:
    cfg = TriggerConfig(min_turn_deg=20)
    samples = _session()
    whole = ImpactTrigger(cfg)
    expected = whole.feed(samples) + whole.flush()
    one = ImpactTrigger(cfg)
    got: list[ImpactWindow] = []
    for s in samples:
        got += one.feed([s])
    got += one.flush()
    assert got == expected and one.suppressed == whole.suppressed
