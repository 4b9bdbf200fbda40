"""Emergencies from the wearable pendant: an SOS press, and a fall the classifier confirms.

One alert per person in an emergency: the condition is ``emergency`` and the subject is
the resident the pendant is bound to (the device id when it is not bound), so an SOS
press, a confirmed fall and a press right after that fall all land on the same dedup key
and the alert manager keeps ONE open alert, updated as more arrives, instead of paging
twice for one incident.

- ``press`` (pendant SOS button): a CRITICAL alert at once. The device layer already
  turns a latched "sos" flag into one edge-triggered press; this detector still drops
  an event it has already seen (gateway + seq) so a replayed message cannot re-alert.
- ``impact`` (the acceleration window the pendant uploads around an impact): scored by
  the fall classifier (``stream.fall``); a score at or above the threshold is a fall
  alert at once (``fall_severity``, HIGH by default). When the classifier's assessment
  says the window shows no movement after the impact (``still_after``), the fall is
  raised at once at ``still_severity`` (CRITICAL): someone lying still must not wait for
  a heartbeat. Otherwise a later check remains: unless movement is reported in the
  ``still_after_s`` after the fall, the alert is raised again as CRITICAL. A pendant
  heartbeat's ``activity`` counts movement since the *previous* heartbeat, so its period
  may include the walking before the fall: a heartbeat counts as "moved" only when the
  previous heartbeat of the same pendant (its period's start) was at or after the impact.
  When that previous heartbeat is unknown (first one seen, or another pendant) it does
  not count: a false "moved" would hide a person who cannot get up, while a false
  "still" only raises an already paging alert to CRITICAL. A press within ``merge_s`` of
  a fall says so in the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import msgspec

from device_profiles.events import Event, Value
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.detectors.options import (
    Convert,
    boolean,
    choice,
    duration,
    number,
    optional,
    read_options,
)

log = logging.getLogger(__name__)

CONDITION = "emergency"
# Event keys remembered per partition to make the detector idempotent on its own.
RECENT_KEYS = 64


class Assessment(Protocol):
    """What a scorer may return instead of a bare score: the score and the facts in words."""

    score: float
    reason: str


#: Scores an impact window: a probability, or an :class:`Assessment` (the packaged
#: classifier's ``assess``, whose words go into the alert's reason).
Scorer = Callable[[Mapping[str, Value]], "float | Assessment"]


class AlarmState(msgspec.Struct, kw_only=True):
    """Per person (or unbound pendant) emergency state."""

    recent: list[str] = msgspec.field(default_factory=list)
    last_press: int | None = None
    last_fall: int | None = None
    fall_score: float | None = None
    # A fall waiting for the stillness check: deadline of the check, ms UTC.
    still_check_at: int | None = None
    moved_since_fall: bool = False
    # The last heartbeat seen (ms UTC) and its pendant: the start of the next one's period.
    heartbeat_at: int | None = None
    heartbeat_device: str | None = None
    # Who the last fall was about: tick() has no event to take them from.
    site: str = ""
    subject: str = ""
    resident: str | None = None
    device: str | None = None


_SEVERITIES = tuple(s.value for s in Severity)

#: The options of the ``detectors.alarm`` config section. The ``scorer`` keyword is not
#: one of them: a Python callable, passed by tests and embedders, never set from YAML.
OPTIONS: dict[str, Convert] = {
    "fall": boolean,
    "fall_threshold": optional(number(0, 1)),
    "fall_severity": choice(*_SEVERITIES),
    "still_severity": choice(*_SEVERITIES),
    "still_after_s": duration(positive=True),
    "merge_s": duration(),
    "unscored_impacts": choice("alert", "ignore"),
}


def check_options(options: Mapping[str, Any], where: str = "detectors.alarm") -> None:
    """Raise :class:`~stream.detectors.options.OptionProblems` naming every bad option."""
    read_options(options, where, OPTIONS)


def _default_scorer() -> tuple[Scorer | None, float | None]:
    """The packaged fall classifier (``stream.fall.model``), when it is installed and loads."""
    try:
        # imported lazily: numpy, and the model file, only when falls are scored
        from stream.fall import model as fall_model
    except ImportError:
        return None, None
    factory: Any = getattr(fall_model, "FallClassifier", None)
    if factory is None:
        return None, None
    try:
        classifier = factory.load()
    except Exception as exc:  # a missing or broken model must not stop SOS alerts
        log.warning("fall classifier unavailable, impacts are not scored: %s", exc)
        return None, None
    # e.g. another scikit-learn release than the one that trained it: operators should
    # see it in the processor's log, not only in 'carewatch fall info'
    for note in getattr(classifier, "notes", None) or ():
        log.warning("fall classifier %s: %s", getattr(classifier, "source", "?"), note)
    threshold = getattr(classifier, "threshold", None)
    scorer = getattr(classifier, "assess", None) or classifier.score
    return scorer, (float(threshold) if threshold is not None else None)


class AlarmDetector(Detector[AlarmState]):
    """SOS presses and confirmed falls become one emergency alert per person.

    Options (the ``detectors.alarm`` section of the stream config):

    ``fall`` (true)
        score ``impact`` windows with the fall classifier;
    ``fall_threshold`` (the classifier's own, else 0.5)
        a score (0 to 1) at or above it is a fall;
    ``fall_severity`` ("high"), ``still_severity`` ("critical")
        severity of a fall, and of a fall followed by no movement;
    ``still_after_s`` (120)
        how long after a fall movement must be reported to count as "moved": seconds,
        or a duration such as ``"2m"`` (the name says seconds for compatibility);
    ``merge_s`` (60)
        a press this close to a fall is reported as part of the same incident (seconds,
        or a duration);
    ``unscored_impacts`` ("alert")
        what an impact becomes when no classifier is available: ``alert`` (a HIGH
        "possible fall") or ``ignore``.
    """

    name: ClassVar[str] = "alarm"
    state_type: ClassVar[type[msgspec.Struct]] = AlarmState

    def __init__(
        self,
        *,
        fall: bool = True,
        fall_threshold: float | None = None,
        fall_severity: str = "high",
        still_severity: str = "critical",
        still_after_s: float | str = 120.0,
        merge_s: float | str = 60.0,
        unscored_impacts: str = "alert",
        scorer: Scorer | None = None,
    ) -> None:
        """Raises ConfigError naming every bad option (see :data:`OPTIONS`)."""
        o = read_options(
            {
                "fall": fall,
                "fall_threshold": fall_threshold,
                "fall_severity": fall_severity,
                "still_severity": still_severity,
                "still_after_s": still_after_s,
                "merge_s": merge_s,
                "unscored_impacts": unscored_impacts,
            },
            "detectors.alarm",
            OPTIONS,
        )
        self.fall_severity = Severity(o["fall_severity"])
        self.still_severity = Severity(o["still_severity"])
        self.still_after_ms: int = o["still_after_s"]
        self.merge_ms: int = o["merge_s"]
        self.unscored_impacts: str = o["unscored_impacts"]
        default_threshold: float | None = None
        if scorer is None and fall:
            scorer, default_threshold = _default_scorer()
        self.scorer = scorer if fall else None
        threshold: float | None = o["fall_threshold"]
        self.threshold = (
            threshold
            if threshold is not None
            else (default_threshold if default_threshold is not None else 0.5)
        )

    # --- partitioning ------------------------------------------------------------------
    def key(self, event: Event) -> str | None:
        if event.kind != "pendant" or event.reading not in ("press", "impact", "heartbeat"):
            return None
        return f"{event.site}/{self._subject(event)}"

    @staticmethod
    def _subject(event: Event) -> str:
        return event.resident if event.resident else event.device

    def initial_state(self, key: str) -> AlarmState:
        return AlarmState()

    # --- events -------------------------------------------------------------------------
    def step(
        self, state: AlarmState, event: Event, ctx: DetectorContext
    ) -> tuple[AlarmState, list[AlertSignal]]:
        # The event time is part of the key: a gateway that restarted its numbering
        # reuses seqs, while a redelivered copy carries the original's time.
        event_key = f"{event.gateway}:{event.seq}:{event.time}"
        if event.seq > 0 and event_key in state.recent:
            return state, []  # already folded in: a replayed message must not re-alert
        recent = [*state.recent, event_key][-RECENT_KEYS:] if event.seq > 0 else state.recent
        if event.reading == "press":
            return self._press(state, event, recent)
        if event.reading == "impact":
            return self._impact(state, event, recent)
        return self._heartbeat(state, event, recent), []

    def _press(
        self, state: AlarmState, event: Event, recent: list[str]
    ) -> tuple[AlarmState, list[AlertSignal]]:
        near_fall = (
            state.last_fall is not None and abs(event.time - state.last_fall) <= self.merge_ms
        )
        if near_fall:
            assert state.last_fall is not None
            seconds = abs(event.time - state.last_fall) // 1000
            reason = f"SOS button pressed {seconds} s after a detected fall"
            trigger = "fall+press"
        else:
            reason = "SOS button pressed on the pendant"
            trigger = "press"
        new = msgspec.structs.replace(state, recent=recent, last_press=event.time)
        return new, [self._signal(event, Severity.CRITICAL, reason, trigger)]

    def _impact(
        self, state: AlarmState, event: Event, recent: list[str]
    ) -> tuple[AlarmState, list[AlertSignal]]:
        state = msgspec.structs.replace(state, recent=recent)
        if self.scorer is None:
            if self.unscored_impacts == "ignore":
                return state, []
            reason = "impact detected by the pendant (no fall classifier to confirm it)"
            return state, [self._signal(event, Severity.HIGH, reason, "impact")]
        try:
            result = self.scorer(event.values)
            still_after: object = None
            if isinstance(result, int | float):
                score, words = float(result), ""
            else:
                score, words = float(result.score), str(result.reason)
                # the packaged classifier's FallAssessment; a bare Assessment may lack it
                still_after = getattr(result, "still_after", None)
        except Exception as exc:  # a window the model cannot read is still an impact
            log.warning("fall classifier failed on %s:%s: %s", event.gateway, event.seq, exc)
            reason = f"impact detected by the pendant; the fall classifier failed ({exc})"
            return state, [self._signal(event, Severity.HIGH, reason, "impact")]
        if score < self.threshold:
            return state, []
        near_press = (
            state.last_press is not None and abs(event.time - state.last_press) <= self.merge_ms
        )
        reason = f"fall detected by the pendant (classifier score {score:.2f})"
        if words:  # e.g. "impact 4.4 g, after 0.30 s of falling, no movement after it"
            reason = f"fall detected by the pendant: {words} (classifier score {score:.2f})"
        severity = self.fall_severity
        trigger = "fall"
        # The window itself shows no movement after the impact: the person is lying
        # still now, so no later check is needed to raise the stillness severity.
        still_now = still_after is True
        if still_now:
            severity = max(severity, self.still_severity, key=_rank)
            trigger = "fall+still"
        if near_press:
            reason += ", SOS button pressed too"
            severity = max(severity, Severity.CRITICAL, key=_rank)
            trigger = "fall+press"
        new = msgspec.structs.replace(
            state,
            last_fall=event.time,
            fall_score=score,
            still_check_at=None if still_now else event.time + self.still_after_ms,
            moved_since_fall=False,
            site=event.site,
            subject=self._subject(event),
            resident=event.resident,
            device=event.device,
        )
        return new, [self._signal(event, severity, reason, trigger, score=score)]

    def _heartbeat(self, state: AlarmState, event: Event, recent: list[str]) -> AlarmState:
        moved = state.moved_since_fall
        activity = event.values.get("activity")
        # The period this heartbeat reports on began at the previous heartbeat of the
        # same pendant; unknown (None) when that one was not seen.
        period_start = state.heartbeat_at if state.heartbeat_device == event.device else None
        if (
            state.still_check_at is not None
            and state.last_fall is not None
            and period_start is not None
            and period_start >= state.last_fall
            and event.time > state.last_fall
            and isinstance(activity, int)
            and not isinstance(activity, bool)
            and activity > 0
        ):
            moved = True
        heartbeat_at, heartbeat_device = state.heartbeat_at, state.heartbeat_device
        if heartbeat_device != event.device or heartbeat_at is None or event.time > heartbeat_at:
            heartbeat_at, heartbeat_device = event.time, event.device  # late ones do not rewind
        return msgspec.structs.replace(
            state,
            recent=recent,
            moved_since_fall=moved,
            heartbeat_at=heartbeat_at,
            heartbeat_device=heartbeat_device,
        )

    # --- time ---------------------------------------------------------------------------
    def deadline(self, state: AlarmState) -> int | None:
        return state.still_check_at

    def tick(
        self, state: AlarmState, now: int, ctx: DetectorContext
    ) -> tuple[AlarmState, list[AlertSignal]]:
        if state.still_check_at is None or now < state.still_check_at:
            return state, []
        new = msgspec.structs.replace(state, still_check_at=None)
        if state.moved_since_fall or state.last_fall is None:
            return new, []
        seconds = (state.still_check_at - state.last_fall) // 1000
        signal = AlertSignal(
            condition=CONDITION,
            subject=state.subject,
            site=state.site,
            time=state.still_check_at,
            severity=self.still_severity,
            reason=f"fall detected by the pendant, and no movement in the {seconds} s after it",
            resident=state.resident,
            device=state.device,
            details={"trigger": "fall+still", "score": state.fall_score},
        )
        return new, [signal]

    # --- helpers ------------------------------------------------------------------------
    def _signal(
        self,
        event: Event,
        severity: Severity,
        reason: str,
        trigger: str,
        score: float | None = None,
    ) -> AlertSignal:
        details: dict[str, Any] = {
            "trigger": trigger,
            "gateway": event.gateway,
            "seq": event.seq,
            "reading": event.reading,
        }
        if score is not None:
            details["score"] = round(score, 4)
        if not event.clock_ok:
            details["clock_ok"] = False
        return AlertSignal(
            condition=CONDITION,
            subject=self._subject(event),
            site=event.site,
            time=event.time,
            severity=severity,
            reason=reason,
            resident=event.resident,
            device=event.device,
            details=details,
        )


_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


def _rank(severity: Severity) -> int:
    return _ORDER[severity]
