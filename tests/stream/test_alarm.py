"""Table-driven tests of the emergency (SOS press + confirmed fall) detector."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from device_profiles.errors import ConfigError
from device_profiles.events import Event
from stream.context import ConfigContext
from stream.detectors.alarm import AlarmDetector, AlarmState
from stream.detectors.base import AlertSignal, Severity
from tests.stream.helpers import T0, ev


def score_from_values(values: Mapping[str, Any]) -> float:
    """A stand-in classifier: the window says its own score (the real one is tested apart)."""
    return float(values.get("score", 0.0))


def impact(seq: int, score: float, **kw: Any) -> Event:
    return ev(seq, "impact", values={"score": score, "x": [0.0], "y": [0.0], "z": [1.0]}, **kw)


def heartbeat(seq: int, activity: int, **kw: Any) -> Event:
    return ev(seq, "heartbeat", values={"battery": 80, "activity": activity}, **kw)


@dataclass
class Case:
    name: str
    events: list[Event]
    # (severity, trigger) of each signal, in order
    expected: list[tuple[Severity, str]]
    tick_at: int | None = None  # ms after T0: run tick() then
    options: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("press alerts at once", [ev(1)], [(Severity.CRITICAL, "press")]),
    Case("redelivered press is ignored", [ev(1), ev(1)], [(Severity.CRITICAL, "press")]),
    Case(
        "two presses, two signals (manager dedups)",
        [ev(1), ev(2)],
        [(Severity.CRITICAL, "press"), (Severity.CRITICAL, "press")],
    ),
    Case("not a pendant: ignored", [ev(1, kind="door", reading="contact")], []),
    Case("heartbeat alone: nothing", [heartbeat(1, 0)], []),
    Case("impact under the threshold: nothing", [impact(1, 0.2)], []),
    Case("confirmed fall", [impact(1, 0.9)], [(Severity.HIGH, "fall")]),
    Case(
        "press 20 s after a fall merges into the incident",
        [impact(1, 0.9, t=0), ev(2, t=20_000)],
        [(Severity.HIGH, "fall"), (Severity.CRITICAL, "fall+press")],
    ),
    Case(
        "press 2 min after a fall is its own press",
        [impact(1, 0.9, t=0), ev(2, t=120_000)],
        [(Severity.HIGH, "fall"), (Severity.CRITICAL, "press")],
    ),
    Case(
        "fall 10 s after a press is critical at once",
        [ev(1, t=0), impact(2, 0.9, t=10_000)],
        [(Severity.CRITICAL, "press"), (Severity.CRITICAL, "fall+press")],
    ),
    Case(
        "fall then stillness raises to critical",
        [impact(1, 0.9, t=0), heartbeat(2, 0, t=60_000)],
        [(Severity.HIGH, "fall"), (Severity.CRITICAL, "fall+still")],
        tick_at=120_000,
    ),
    Case(
        "fall then movement: no second signal",
        [impact(1, 0.9, t=0), heartbeat(2, 0, t=10_000), heartbeat(3, 5, t=60_000)],
        [(Severity.HIGH, "fall")],
        tick_at=120_000,
    ),
    Case(
        "walking before the fall does not count as movement after it",
        [heartbeat(1, 7, t=-240_000), impact(2, 0.9, t=0), heartbeat(3, 9, t=60_000)],
        [(Severity.HIGH, "fall"), (Severity.CRITICAL, "fall+still")],
        tick_at=120_000,
    ),
    Case(
        "a heartbeat of unknown period does not count as movement",
        [impact(1, 0.9, t=0), heartbeat(2, 5, t=60_000)],
        [(Severity.HIGH, "fall"), (Severity.CRITICAL, "fall+still")],
        tick_at=120_000,
    ),
    Case(
        "a late heartbeat from before the fall does not rewind the period start",
        [
            impact(1, 0.9, t=0),
            heartbeat(2, 0, t=10_000),
            heartbeat(3, 4, t=-5_000),
            heartbeat(4, 5, t=60_000),
        ],
        [(Severity.HIGH, "fall")],
        tick_at=120_000,
    ),
    Case(
        "tick before the stillness deadline does nothing",
        [impact(1, 0.9, t=0)],
        [(Severity.HIGH, "fall")],
        tick_at=119_999,
    ),
    Case(
        "custom threshold",
        [impact(1, 0.6)],
        [],
        options={"fall_threshold": 0.7},
    ),
]


def run(case: Case) -> list[AlertSignal]:
    detector = AlarmDetector(scorer=score_from_values, **case.options)
    ctx = ConfigContext()
    states: dict[str, AlarmState] = {}
    signals: list[AlertSignal] = []
    for event in case.events:
        key = detector.key(event)
        if key is None:
            continue
        state = states.get(key) or detector.initial_state(key)
        state, out = detector.step(state, event, ctx)
        states[key] = state
        signals += out
    if case.tick_at is not None:
        now = T0 + case.tick_at
        for key, state in states.items():
            deadline = detector.deadline(state)
            if deadline is not None and deadline <= now:
                states[key], out = detector.tick(state, now, ctx)
                signals += out
    return signals


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_alarm_table(case: Case) -> None:
    signals = run(case)
    assert [(s.severity, s.details["trigger"]) for s in signals] == case.expected
    for s in signals:
        assert s.condition == "emergency"
        assert s.key == "site-a/emergency/res-1"
        assert s.action == "raise"
        assert s.reason


def test_unbound_pendant_uses_device_as_subject() -> None:
    detector = AlarmDetector(scorer=score_from_values)
    event = ev(1, resident=None, device="pendant-9")
    key = detector.key(event)
    assert key == "site-a/pendant-9"
    _, signals = detector.step(detector.initial_state(key), event, ConfigContext())
    assert signals[0].subject == "pendant-9"
    assert signals[0].resident is None
    assert signals[0].device == "pendant-9"


def test_stillness_deadline_is_exposed_and_cleared() -> None:
    detector = AlarmDetector(scorer=score_from_values, still_after_s=30)
    state = detector.initial_state("site-a/res-1")
    assert detector.deadline(state) is None
    state, _ = detector.step(state, impact(1, 0.95, t=0), ConfigContext())
    assert detector.deadline(state) == T0 + 30_000
    state, out = detector.tick(state, T0 + 30_000, ConfigContext())
    assert detector.deadline(state) is None
    assert out[0].time == T0 + 30_000
    assert out[0].subject == "res-1"
    assert out[0].site == "site-a"


def test_state_round_trips_through_json() -> None:
    import msgspec

    detector = AlarmDetector(scorer=score_from_values)
    state, _ = detector.step(AlarmState(), impact(1, 0.9), ConfigContext())
    raw = msgspec.json.encode(state)
    assert msgspec.json.decode(raw, type=AlarmState) == state


def test_recent_keys_are_bounded() -> None:
    detector = AlarmDetector(scorer=score_from_values)
    state = AlarmState()
    for seq in range(1, 200):
        state, _ = detector.step(state, heartbeat(seq, 1), ConfigContext())
    assert len(state.recent) <= 64


@pytest.mark.parametrize(
    ("unscored", "expected"), [("alert", [(Severity.HIGH, "impact")]), ("ignore", [])]
)
def test_impact_without_classifier(unscored: str, expected: list[Any]) -> None:
    detector = AlarmDetector(fall=True, unscored_impacts=unscored)
    detector.scorer = None  # as when the model package is not installed
    _, signals = detector.step(AlarmState(), impact(1, 0.9), ConfigContext())
    assert [(s.severity, s.details["trigger"]) for s in signals] == expected


def test_classifier_failure_still_alerts() -> None:
    def broken(values: Mapping[str, Any]) -> float:
        raise ValueError("window too short")

    detector = AlarmDetector(scorer=broken)
    _, signals = detector.step(AlarmState(), impact(1, 0.9), ConfigContext())
    assert signals[0].severity == Severity.HIGH
    assert "window too short" in signals[0].reason


def test_bad_options_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"detectors\.alarm\.unscored_impacts: 'maybe'"):
        AlarmDetector(unscored_impacts="maybe")
    with pytest.raises(ConfigError, match=r"detectors\.alarm\.fall_severity: 'loud'"):
        AlarmDetector(fall_severity="loud")


def test_default_scorer_is_the_shipped_fall_classifier() -> None:
    try:
        from stream.fall.model import FallClassifier

        classifier = FallClassifier.load()
    except Exception as exc:  # the model ships with the fall classifier's work
        pytest.skip(f"no shipped fall model: {exc}")
    detector = AlarmDetector()
    assert detector.scorer is not None
    assert detector.threshold == classifier.threshold


def test_fall_model_notes_are_logged_at_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A model trained with another scikit-learn is reported in the processor's log."""
    from stream.fall import model as fall_model

    try:
        fall_model.FallClassifier.load()
    except Exception as exc:
        pytest.skip(f"no shipped fall model: {exc}")
    monkeypatch.setattr(fall_model, "installed_sklearn_version", lambda: "0.0.test")
    with caplog.at_level(logging.WARNING, logger="stream.detectors.alarm"):
        detector = AlarmDetector()
    assert detector.scorer is not None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0.0.test installed" in r.getMessage() for r in warned), caplog.text


@dataclass
class Assessed:
    score: float
    reason: str


def test_a_classifier_assessment_puts_its_words_in_the_reason() -> None:
    words = "impact 4.4 g, after 0.30 s of falling, no movement after it"
    detector = AlarmDetector(scorer=lambda values: Assessed(score_from_values(values), words))
    event = impact(1, 0.97)
    key = detector.key(event)
    assert key is not None
    _, [signal] = detector.step(detector.initial_state(key), event, ConfigContext())
    assert signal.reason == f"fall detected by the pendant: {words} (classifier score 0.97)"
    _, none = detector.step(detector.initial_state(key), impact(2, 0.1), ConfigContext())
    assert none == []  # below the threshold, whatever the words say


def test_the_packaged_classifier_confirms_a_synthetic_fall_in_words() -> None:
    """The detector's default scorer is the shipped model's ``assess``."""
    from device_profiles.pendant_trigger import ImpactTrigger, TriggerConfig, resample
    from device_profiles.profiles import ProfileRegistry
    from simulators.traces import synthetic_fall

    profile = ProfileRegistry.load().get("oem-rf433-button-pendant")
    trigger = ImpactTrigger(TriggerConfig.from_options(profile.codec_options["trigger"]))
    windows = trigger.feed(resample(synthetic_fall(), 50, 50)) + trigger.flush()
    fall = max(windows, key=lambda w: w.peak_g)
    values = {
        "rate_hz": 50,
        "range_g": 8.0,
        "trigger_index": fall.trigger_index,
        "peak_g": fall.peak_g,
        "x": list(fall.x),
        "y": list(fall.y),
        "z": list(fall.z),
    }
    detector = AlarmDetector()
    if detector.scorer is None:
        pytest.skip("no fall model is packaged")
    event = ev(1, "impact", values=values)
    key = detector.key(event)
    assert key is not None
    _, [signal] = detector.step(detector.initial_state(key), event, ConfigContext())
    assert signal.reason.startswith("fall detected by the pendant: impact ")
    # the synthetic fall ends lying still: the window says so, critical at once
    assert "no movement after it" in signal.reason
    assert (signal.severity, signal.details["trigger"]) == (Severity.CRITICAL, "fall+still")


@dataclass
class StillAssessed:
    score: float
    reason: str
    still_after: bool


@pytest.mark.parametrize("still", [True, False])
def test_a_window_still_after_the_impact_is_critical_at_once(still: bool) -> None:
    """The classifier saw no movement after the impact: no waiting for a heartbeat."""
    words = "impact 4.4 g, no movement after it" if still else "impact 4.4 g, moving after it"
    detector = AlarmDetector(
        scorer=lambda values: StillAssessed(score_from_values(values), words, still)
    )
    state, [signal] = detector.step(AlarmState(), impact(1, 0.97, t=0), ConfigContext())
    if still:
        assert (signal.severity, signal.details["trigger"]) == (Severity.CRITICAL, "fall+still")
        assert detector.deadline(state) is None  # nothing left to raise later
    else:
        assert (signal.severity, signal.details["trigger"]) == (Severity.HIGH, "fall")
        assert detector.deadline(state) == T0 + 120_000
