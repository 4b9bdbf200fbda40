"""The processor core without a broker: messages in, committed effects out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from device_profiles.events import Event, encode_batch, event_to_dict
from device_profiles.topics import ack_topic, events_topic, health_topic, status_topic
from stream.clock import ManualClock
from stream.config import StreamConfig, parse_config
from stream.detectors.alarm import AlarmDetector
from stream.detectors.base import AlertSignal, Detector, DetectorContext, Severity
from stream.processor import Processor
from stream.state import StateStore
from tests.stream.helpers import T0, ev


class Seen(msgspec.Struct):
    events: list[str] = msgspec.field(default_factory=list)


class Recorder(Detector[Seen]):
    """Records the (kind, reading, values) of every event it is given, one partition."""

    name: ClassVar[str] = "recorder"
    state_type: ClassVar[type[msgspec.Struct]] = Seen

    def key(self, event: Event) -> str | None:
        return "all"

    def initial_state(self, key: str) -> Seen:
        return Seen()

    def step(
        self, state: Seen, event: Event, ctx: DetectorContext
    ) -> tuple[Seen, list[AlertSignal]]:
        item = f"{event.kind}/{event.reading}/{json.dumps(event.values, sort_keys=True)}"
        return Seen([*state.events, item]), []


class Deadman(Detector[Seen]):
    """Alerts when a door has been silent for 10 minutes (a timer with no data)."""

    name: ClassVar[str] = "deadman"
    state_type: ClassVar[type[msgspec.Struct]] = Seen

    def key(self, event: Event) -> str | None:
        return event.device if event.kind == "door" else None

    def initial_state(self, key: str) -> Seen:
        return Seen()

    def step(
        self, state: Seen, event: Event, ctx: DetectorContext
    ) -> tuple[Seen, list[AlertSignal]]:
        return Seen([event.device, str(event.time)]), []

    def deadline(self, state: Seen) -> int | None:
        return int(state.events[1]) + 600_000 if state.events else None

    def tick(self, state: Seen, now: int, ctx: DetectorContext) -> tuple[Seen, list[AlertSignal]]:
        signal = AlertSignal(
            condition="silent_door",
            subject=state.events[0],
            site="site-a",
            time=now,
            severity=Severity.HIGH,
            reason="door silent for 10 min",
            device=state.events[0],
        )
        return Seen(), [signal]


CONFIG: dict[str, Any] = {
    "notifiers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
    "recipients": {"desk": {"notifiers": ["hook"]}},
    "policies": {"default": {"tiers": [{"recipients": ["desk"]}]}},
    "sites": {"site-a": {"timezone": "UTC", "quiet_hours": False}},
    "telemetry": {"enabled": True},
    "ingest": {"max_lateness": "5m"},
}


@pytest.fixture
def config() -> StreamConfig:
    return parse_config(CONFIG)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.sqlite", synchronous="normal")
    yield s
    s.close()


def make(config: StreamConfig, store: StateStore, clock: ManualClock) -> Processor:
    detectors: list[Detector[Any]] = [AlarmDetector(fall=False), Recorder(), Deadman()]
    return Processor(config, store, clock, detectors)


def recorded(store: StateStore) -> list[str]:
    [(_, raw, _)] = store.partitions("recorder")
    return msgspec.json.decode(raw, type=Seen).events


def spooled(store: StateStore) -> list[str]:
    _, lines = store.spool_take(1_000_000)
    return lines


TOPIC = events_topic("site-a", "gw-1")


def test_press_becomes_one_alert_and_duplicates_do_nothing(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0 + 5000))
    out = proc.handle_message(TOPIC, encode_batch([ev(1), ev(2, "heartbeat")]))
    assert (out.accepted, out.duplicates, out.signals) == (2, 0, 1)
    [alert] = store.open_alerts()
    assert alert.severity == "critical"
    lines_before = spooled(store)
    outbox_before = len(store.outbox())
    # The gateway resends (lost PUBACK): nothing more happens.
    again = proc.handle_message(TOPIC, encode_batch([ev(1), ev(2, "heartbeat")]))
    assert (again.accepted, again.duplicates) == (0, 2)
    assert len(store.open_alerts()) == 1
    assert store.open_alerts()[0].count == 1
    assert spooled(store) == lines_before
    assert len(store.outbox()) == outbox_before
    assert proc.metrics.value("carewatch_stream_events_total", outcome="duplicate") == 2


def test_telemetry_lines_for_events_and_transitions(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0 + 5000))
    proc.handle_message(TOPIC, encode_batch([ev(1)]))
    lines = spooled(store)
    assert any(line.startswith("pendant,") and "event_seq=1i" in line for line in lines)
    assert any(line.startswith("alerts,") and 'transition="raised"' in line for line in lines)


def test_malformed_input_is_dead_lettered_and_the_rest_processed(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0 + 5000))
    assert proc.handle_message(TOPIC, b"{not json").dead == 1
    good = event_to_dict(ev(3, "heartbeat"))
    bad = {**event_to_dict(ev(4, "heartbeat")), "seq": -1}
    other_gw = event_to_dict(ev(5, "heartbeat", gateway="gw-2"))
    payload = json.dumps({"events": [good, bad, "x", other_gw]}).encode()
    out = proc.handle_message(TOPIC, payload)
    assert (out.accepted, out.dead) == (1, 3)
    assert proc.handle_message("other/topic", b"x").dead == 1
    reasons = [d["reason"].split(":")[0] for d in store.dead_letters()]
    assert sorted(reasons) == ["event", "event", "json", "topic", "topic_mismatch"]
    assert any("events[1]: seq=-1" in d["reason"] for d in store.dead_letters())
    assert proc.metrics.value("carewatch_stream_dead_letters_total", reason="event") == 2


def test_gap_reported_and_out_of_order_filled(config: StreamConfig, store: StateStore) -> None:
    proc = make(config, store, ManualClock(T0 + 60_000))
    proc.handle_message(TOPIC, encode_batch([ev(1, "heartbeat")]))
    proc.handle_message(TOPIC, encode_batch([ev(5, "heartbeat")]))
    assert proc.metrics.value("carewatch_stream_seq_gaps_total") == 3
    proc.handle_message(TOPIC, encode_batch([ev(3, "heartbeat"), ev(2, "heartbeat")]))
    gw = store.get_gateway("gw-1", "site-a")
    assert gw.seqs.missing() == 1  # 4 still missing
    assert gw.events == 4


def test_late_events_are_stored_but_not_sent_to_detectors(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0 + 3_600_000))
    proc.handle_message(TOPIC, encode_batch([ev(1, "heartbeat", t=3_600_000)]))
    # 10 minutes older than the newest event of this gateway: beyond the 5 min lateness
    late_hb = ev(2, "heartbeat", t=3_000_000)
    late_press = ev(3, "press", t=3_000_000)
    out = proc.handle_message(TOPIC, encode_batch([late_hb, late_press]))
    assert out.late == 2
    assert len(recorded(store)) == 2  # the first heartbeat and the urgent press
    assert len(store.open_alerts()) == 1  # an SOS is never dropped for being late
    assert sum(1 for line in spooled(store) if line.startswith("pendant,")) == 3


def test_gateway_status_becomes_synthetic_events_on_change(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0))
    topic = status_topic("site-a", "gw-1")
    proc.handle_message(topic, b"online")
    proc.handle_message(topic, b"online")  # retained copy after a resubscribe: no change
    proc.handle_message(topic, b"offline")
    proc.handle_message(topic, b"")  # cleared retained message
    assert proc.handle_message(topic, b"maybe").dead == 1
    assert recorded(store) == [
        'gateway/status/{"online": true}',
        'gateway/status/{"online": false}',
    ]
    assert store.get_gateway("gw-1", "site-a").online is False


def test_device_health_from_events_and_heartbeats(config: StreamConfig, store: StateStore) -> None:
    proc = make(config, store, ManualClock(T0 + 10_000))
    down = ev(1, "device_health", kind="door", device="door-1", resident=None,
              values={"up": False, "reason": "no reading for 3600 s"})  # fmt: skip
    proc.handle_message(TOPIC, encode_batch([down]))
    heartbeat = {"devices": {"door-1": {"state": "down"}, "pendant-1": {"state": "up"}}}
    proc.handle_message(health_topic("site-a", "gw-1"), json.dumps(heartbeat).encode())
    statuses = [e for e in recorded(store) if e.startswith("gateway/device_status")]
    assert statuses == [
        'gateway/device_status/{"device": "door-1", "reason": "no reading for 3600 s", '
        '"up": false}',
        'gateway/device_status/{"device": "pendant-1", "reason": "", "up": true}',
    ]


def test_ack_over_mqtt_and_wrong_site(config: StreamConfig, store: StateStore) -> None:
    clock = ManualClock(T0 + 5000)
    proc = make(config, store, clock)
    proc.handle_message(TOPIC, encode_batch([ev(1)]))
    [alert] = store.open_alerts()
    # an app of another site cannot acknowledge this site's alert
    proc.handle_message(ack_topic("site-b", alert.id), b'{"by": "intruder"}')
    assert store.get_alert(alert.id).state == "raised"  # type: ignore[union-attr]
    assert proc.handle_message(ack_topic("site-a", alert.id), b'{"note": "x"}').dead == 1
    clock.advance(30_000)
    proc.handle_message(ack_topic("site-a", alert.id), b'{"by": "nurse-li", "note": "going"}')
    acked = store.get_alert(alert.id)
    assert acked is not None and acked.state == "acknowledged"
    assert (acked.acked_by, acked.acked_at) == ("nurse-li", T0 + 35_000)
    proc.handle_message(ack_topic("site-a", alert.id), b'{"by": "li", "action": "resolve"}')
    assert store.get_alert(alert.id).state == "resolved"  # type: ignore[union-attr]


def test_timer_fires_without_data_and_after_restart(tmp_path: Path, config: StreamConfig) -> None:
    path = tmp_path / "s.sqlite"
    store = StateStore(path)
    clock = ManualClock(T0)
    proc = make(config, store, clock)
    door = ev(1, "contact", kind="door", device="door-1", resident=None, t=0,
              values={"contact": True})  # fmt: skip
    proc.handle_message(TOPIC, encode_batch([door]))
    assert proc.next_deadline() == T0 + 600_000
    assert proc.run_due(T0 + 599_999) == 0
    store.close()
    # The processor was down when the deadline passed: it fires on the first pass.
    store = StateStore(path)
    clock = ManualClock(T0 + 3_600_000)
    proc = make(config, store, clock)
    assert proc.run_due() >= 1
    [alert] = store.open_alerts()
    assert alert.condition == "silent_door"
    assert proc.next_deadline() is None or proc.next_deadline() > clock.now_ms()  # type: ignore[operator]
    store.close()


def test_detector_bug_is_contained(config: StreamConfig, store: StateStore) -> None:
    class Broken(Recorder):
        name: ClassVar[str] = "broken"

        def step(
            self, state: Seen, event: Event, ctx: DetectorContext
        ) -> tuple[Seen, list[AlertSignal]]:
            raise RuntimeError("bug")

    proc = Processor(config, store, ManualClock(T0 + 5000), [Broken(), AlarmDetector(fall=False)])
    out = proc.handle_message(TOPIC, encode_batch([ev(1)]))
    assert out.accepted == 1
    assert len(store.open_alerts()) == 1
    assert proc.metrics.value("carewatch_stream_detector_errors_total", detector="broken") == 1


def test_sequence_reset_is_detected(config: StreamConfig, store: StateStore) -> None:
    proc = make(config, store, ManualClock(T0 + 10_000_000))
    proc.handle_message(TOPIC, encode_batch([ev(s, "heartbeat") for s in range(1, 50)]))
    # the gateway lost its disk and numbers from 1 again, with new receive times
    fresh = ev(1, t=9_000_000)
    out = proc.handle_message(TOPIC, encode_batch([fresh]))
    assert out.accepted == 1
    assert len(store.open_alerts()) == 1
    assert store.get_gateway("gw-1", "site-a").resets == 1


def test_fall_then_press_in_the_same_minute_is_one_alert(
    config: StreamConfig, store: StateStore
) -> None:
    detector = AlarmDetector(scorer=lambda values: 0.93)
    proc = Processor(config, store, ManualClock(T0 + 120_000), [detector])
    window = {"rate_hz": 50, "x": [0.0], "y": [0.0], "z": [1.0], "trigger_index": 0}
    proc.handle_message(TOPIC, encode_batch([ev(1, "impact", t=60_000, values=window)]))
    [alert] = store.open_alerts()
    assert alert.severity == "high"
    proc.handle_message(TOPIC, encode_batch([ev(2, "press", t=80_000)]))
    [merged] = store.open_alerts()
    assert merged.id == alert.id
    assert merged.severity == "critical"
    assert merged.count == 2
    assert merged.reason == "SOS button pressed 20 s after a detected fall"
    kinds = [t["kind"] for t in store.transitions(alert.id)]
    assert kinds == ["raised", "severity"]
    pages = [r for r in store.outbox() if r.notifier == "hook"]
    assert [json.loads(r.payload)["event"] for r in pages] == ["raised", "severity"]
    assert proc.metrics.value("carewatch_stream_seq_lost_total") == 0


def test_a_second_processor_on_the_same_database_is_refused(tmp_path: Path) -> None:
    from stream.state import StateError

    first = StateStore(tmp_path / "s.sqlite")
    with pytest.raises(StateError, match="in use by another stream processor"):
        StateStore(tmp_path / "s.sqlite")
    first.close()
    StateStore(tmp_path / "s.sqlite").close()  # free again once the first is gone


def test_configured_member_who_never_checked_in_is_expected(tmp_path: Path) -> None:
    """A day-care member in the config is watched from the start, with no event at all."""
    from stream.detectors.noshow import NoShowDetector

    doc = {
        **CONFIG,
        "sites": {
            "center-1": {"timezone": "UTC", "quiet_hours": False, "type": "center",
                         "opening_hours": "08:00-17:00",
                         "opening_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        },
        "residents": {"ma": {"daycare": {"days": "all", "by": "09:30"}}},
    }  # fmt: skip
    config = parse_config(doc)
    store = StateStore(tmp_path / "s.sqlite")
    clock = ManualClock(T0 + 8 * 3_600_000)  # 08:00 UTC, the center just opened
    proc = Processor(config, store, clock, [NoShowDetector()])
    assert proc.seed_configured() == 1
    assert proc.seed_configured() == 0  # idempotent: a restart does not reset the member
    assert proc.next_deadline() == T0 + 9 * 3_600_000 + 30 * 60_000
    assert proc.run_due(T0 + 9 * 3_600_000) == 0
    proc.run_due(T0 + 10 * 3_600_000)
    [alert] = store.open_alerts()
    assert (alert.condition, alert.subject, alert.site) == ("noshow", "ma", "center-1")
    store.close()


class SeqLog(msgspec.Struct):
    seqs: list[int] = msgspec.field(default_factory=list)


class SeqRecorder(Detector[SeqLog]):
    """Records the seq of every event it is given, in partitions of 100 numbers."""

    name: ClassVar[str] = "seqs"
    state_type: ClassVar[type[msgspec.Struct]] = SeqLog

    def key(self, event: Event) -> str | None:
        return f"{event.seq // 100:06d}" if event.kind == "pendant" else None

    def initial_state(self, key: str) -> SeqLog:
        return SeqLog()

    def step(
        self, state: SeqLog, event: Event, ctx: DetectorContext
    ) -> tuple[SeqLog, list[AlertSignal]]:
        return SeqLog([*state.seqs, event.seq]), []


def test_backlog_after_an_outage_is_processed_exactly_once(
    config: StreamConfig, store: StateStore
) -> None:
    """20,000 queued events arrive after the urgent ones the agent sent first.

    The backlog lies far behind the dedup window (4,096 numbers) and hours behind the
    SOS in event time: every event must still reach the detectors exactly once, and
    copies must still be dropped.
    """
    backlog = 20_000
    clock = ManualClock(T0 + (backlog + 60) * 1000)
    proc = Processor(config, store, clock, [AlarmDetector(fall=False), SeqRecorder()])
    heartbeats = {s: ev(s, "heartbeat", values={"battery": 80, "activity": 1})
                  for s in range(1, backlog + 1)}  # fmt: skip
    # Two SOS presses were queued during the outage too (seq 7,000 and the newest one).
    urgent = [ev(backlog + 1, resident="res-1"), ev(7_000, resident="res-2", device="p-2")]
    heartbeats.pop(7_000)
    for event in urgent:  # urgent events leave first, each in its own batch
        assert proc.handle_message(TOPIC, encode_batch([event])).accepted == 1
    batches = [
        [heartbeats[s] for s in range(first, first + 100) if s in heartbeats]
        for first in range(1, backlog + 1, 100)
    ]
    # Out of order: neighbouring batches swapped (a resend after a reconnect overtaken by
    # the next batch), and some batches delivered twice.
    for i in range(0, len(batches) - 1, 7):
        batches[i], batches[i + 1] = batches[i + 1], batches[i]
    resent = 0
    for i, batch in enumerate(batches):
        proc.handle_message(TOPIC, encode_batch(batch))
        if i % 25 == 3:
            again = proc.handle_message(TOPIC, encode_batch(batch))
            assert (again.accepted, again.duplicates) == (0, len(batch))
            resent += len(batch)
    seen = [s for _, raw, _ in store.partitions("seqs")
            for s in msgspec.json.decode(raw, type=SeqLog).seqs]  # fmt: skip
    assert len(seen) == backlog + 1
    assert sorted(seen) == list(range(1, backlog + 2))
    assert proc.metrics.value("carewatch_stream_events_total", outcome="late") == 0
    assert proc.metrics.value("carewatch_stream_events_total", outcome="duplicate") == resent
    assert proc.metrics.value("carewatch_stream_seq_lost_total") == 0
    assert sorted(a.subject for a in store.open_alerts()) == ["res-1", "res-2"]
    gw = store.get_gateway("gw-1", "site-a")
    assert (gw.seqs.missing(), gw.seqs.holes, gw.seqs.above) == (0, [], set())
    assert sum(1 for line in spooled(store) if line.startswith("pendant,")) == backlog + 1


class Faulty(Detector[Seen]):
    """A detector with a bug: on a "boom" reading (and on its timer) it emits a signal
    the alert manager cannot store (details that are not JSON)."""

    name: ClassVar[str] = "faulty"
    state_type: ClassVar[type[msgspec.Struct]] = Seen

    def key(self, event: Event) -> str | None:
        return event.device if event.reading == "boom" else None

    def initial_state(self, key: str) -> Seen:
        return Seen()

    def bad_signal(self, subject: str, t: int) -> AlertSignal:
        return AlertSignal(
            condition="broken", subject=subject, site="site-a", time=t,
            severity=Severity.HIGH, reason="bug", details={"x": object()},
        )  # fmt: skip

    def step(
        self, state: Seen, event: Event, ctx: DetectorContext
    ) -> tuple[Seen, list[AlertSignal]]:
        return Seen([event.device, str(event.time)]), [self.bad_signal(event.device, event.time)]

    def deadline(self, state: Seen) -> int | None:
        return int(state.events[1]) + 600_000 if state.events else None

    def tick(self, state: Seen, now: int, ctx: DetectorContext) -> tuple[Seen, list[AlertSignal]]:
        return Seen(), [self.bad_signal(state.events[0], now)]


def test_a_failing_signal_loses_neither_the_batch_nor_other_alerts(
    config: StreamConfig, store: StateStore
) -> None:
    clock = ManualClock(T0 + 5000)
    proc = Processor(config, store, clock, [Faulty(), AlarmDetector(fall=False), Recorder()])
    boom = ev(1, "boom", device="sensor-9", urgent=False)
    out = proc.handle_message(TOPIC, encode_batch([boom, ev(2), ev(3, "heartbeat")]))
    # The bad signal is skipped on its own; the batch is not dead-lettered.
    assert (out.accepted, out.dead) == (3, 0)
    assert store.dead_letters() == []
    assert len(recorded(store)) == 3
    [alert] = store.open_alerts()
    assert alert.condition == "emergency"
    assert proc.metrics.value("carewatch_stream_internal_errors_total", where="signal") == 1
    # Nothing half-written by the failed signal survives (its savepoint was rolled back).
    count = store.db.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]
    assert count == len(store.transitions(alert.id)) == 1
    # Its timer fails the same way later: contained too, and the pass ends.
    assert proc.run_due(T0 + 3_600_000) >= 1
    assert proc.metrics.value("carewatch_stream_internal_errors_total", where="signal") == 2
    assert store.partitions("faulty")[0][2] is None  # the tick ran; no timer left


def test_an_unreadable_alert_does_not_stop_the_timers(
    config: StreamConfig, store: StateStore
) -> None:
    clock = ManualClock(T0)
    proc = Processor(config, store, clock, [AlarmDetector(fall=False)])
    proc.handle_message(TOPIC, encode_batch([ev(1, t=0)]))
    [good] = store.open_alerts()
    with store.transaction():  # a row another version wrote, or damaged
        store.db.execute(
            "INSERT INTO alerts (id, key, site, state, next_action_at, body)"
            " VALUES ('bad', 'k', 'site-a', 'raised', ?, x'7b6e6f7420')",
            (T0 + 1000,),
        )
    assert proc.run_due(T0 + 10 * 60_000) >= 2
    # The good alert got its reminder; the bad row is counted and tried again later.
    assert [t["kind"] for t in store.transitions(good.id)][-1] == "reminder"
    assert proc.metrics.value("carewatch_stream_internal_errors_total", where="alert_timer") == 1
    (next_at,) = store.db.execute("SELECT next_action_at FROM alerts WHERE id='bad'").fetchone()
    assert next_at == T0 + 11 * 60_000


def test_clock_corrected_copies_are_duplicates_not_a_reset(
    config: StreamConfig, store: StateStore
) -> None:
    """A gateway boots without a clock, publishes, gets NTP, corrects the stamps of what
    is still queued (published but unacknowledged too) and resends it after a reconnect."""
    hour = 3_600_000
    clock = ManualClock(T0 + 5 * hour)
    proc = make(config, store, clock)
    proc.handle_message(TOPIC, encode_batch([ev(s, "heartbeat") for s in range(1, 101)]))
    # After the reboot: stamps estimated from the last known time (2 hours behind).
    untrusted = [
        msgspec.structs.replace(
            ev(s, "press" if s == 120 else "heartbeat", t=100_000 + s * 10), clock_ok=False
        )
        for s in range(101, 151)
    ]
    proc.handle_message(TOPIC, encode_batch(untrusted))
    [alert] = store.open_alerts()
    proc.resolve(alert.id, "nurse-li", "checked")
    lines = len(spooled(store))
    outbox = len(store.outbox())
    corrected = [
        msgspec.structs.replace(e, received=e.received + 2 * hour, time=e.time + 2 * hour,
                                clock_ok=True)
        for e in untrusted
    ]  # fmt: skip
    clock.advance(60_000)
    out = proc.handle_message(TOPIC, encode_batch(corrected))
    assert (out.accepted, out.duplicates) == (0, 50)
    gw = store.get_gateway("gw-1", "site-a")
    assert gw.resets == 0
    assert store.open_alerts() == []  # no second SOS alert, nobody paged again
    assert (len(spooled(store)), len(store.outbox())) == (lines, outbox)
    # A gateway that really lost its disk is still recognized.
    clock.advance(hour)
    fresh = ev(1, t=5 * hour + 10_000)
    assert proc.handle_message(TOPIC, encode_batch([fresh])).accepted == 1
    assert store.get_gateway("gw-1", "site-a").resets == 1
    assert len(store.open_alerts()) == 1


def test_same_gateway_id_in_two_sites_keeps_two_windows(
    config: StreamConfig, store: StateStore
) -> None:
    proc = make(config, store, ManualClock(T0 + 60_000))
    for site in ("site-a", "site-b"):
        batch = [ev(s, "heartbeat", site=site) for s in range(1, 11)]
        out = proc.handle_message(events_topic(site, "gw-1"), encode_batch(batch))
        assert (out.accepted, out.duplicates) == (10, 0)
    proc.handle_message(status_topic("site-b", "gw-1"), b"offline")
    a, b = store.get_gateway("gw-1", "site-a"), store.get_gateway("gw-1", "site-b")
    assert (a.events, b.events) == (10, 10)
    assert (a.online, b.online) == (None, False)
    assert [(g.site, g.gateway) for g in store.gateways()] == [
        ("site-a", "gw-1"),
        ("site-b", "gw-1"),
    ]


def test_every_alert_transition_is_its_own_influx_point(
    config: StreamConfig, store: StateStore
) -> None:
    clock = ManualClock(T0 + 5000)
    proc = make(config, store, clock)
    # Two presses in one batch: "raised" then "updated", same alert, same tags, same now.
    proc.handle_message(TOPIC, encode_batch([ev(1), ev(2)]))
    # Two doors falling silent in one timer pass: two alerts raised at the same now.
    doors = [ev(s, "contact", kind="door", device=f"door-{s}", resident=None, t=0,
                values={"contact": True}) for s in (3, 4)]  # fmt: skip
    proc.handle_message(TOPIC, encode_batch(doors))
    proc.run_due(T0 + 600_000)
    points = [line for line in spooled(store) if line.startswith("alerts,")]
    kinds = [line.split('transition="')[1].split('"')[0] for line in points]
    assert kinds == ["raised", "updated", "raised", "raised", "reminder"]  # SOS reminder too
    # InfluxDB identifies a point by measurement, tags and time: all must differ.
    keys = {(line.split(" ", 1)[0], line.rsplit(" ", 1)[1]) for line in points}
    assert len(keys) == len(points)
    times = [int(line.rsplit(" ", 1)[1]) for line in points]
    assert times == sorted(times) and times[0] == T0 + 5000  # in order, barely moved
    assert times[-1] - (T0 + 600_000) < 10


class Mayfly(Detector[Seen]):
    """A partition per door that expires when its timer fires, or on a 'gone' event."""

    name: ClassVar[str] = "mayfly"
    state_type: ClassVar[type[msgspec.Struct]] = Seen

    def key(self, event: Event) -> str | None:
        return event.device if event.kind == "door" else None

    def initial_state(self, key: str) -> Seen:
        return Seen()

    def step(
        self, state: Seen, event: Event, ctx: DetectorContext
    ) -> tuple[Seen, list[AlertSignal]]:
        gone = event.values.get("gone") is True
        return Seen(["gone" if gone else str(event.time + 600_000)]), []

    def deadline(self, state: Seen) -> int | None:
        return int(state.events[0]) if state.events and state.events[0].isdigit() else None

    def tick(self, state: Seen, now: int, ctx: DetectorContext) -> tuple[Seen, list[AlertSignal]]:
        return Seen(["gone"]), []

    def expired(self, state: Seen) -> bool:
        return state.events == ["gone"]


def test_an_expired_partition_is_deleted_after_step_and_after_tick(
    config: StreamConfig, store: StateStore
) -> None:
    proc = Processor(config, store, ManualClock(T0), [Mayfly()])

    def door(seq: int, device: str, t: int, values: dict[str, Any]) -> bytes:
        event = ev(seq, "contact", kind="door", resident=None, device=device, t=t, values=values)
        return encode_batch([event])

    proc.handle_message(TOPIC, door(1, "d1", 0, {}))
    proc.handle_message(TOPIC, door(2, "d2", 0, {}))
    assert [k for k, _, _ in store.partitions("mayfly")] == ["d1", "d2"]
    proc.handle_message(TOPIC, door(3, "d2", 1000, {"gone": True}))
    assert [k for k, _, _ in store.partitions("mayfly")] == ["d1"]  # deleted after step
    assert proc.run_due(T0 + 600_000) == 1
    assert store.partitions("mayfly") == []  # deleted after tick, timer and all
    assert proc.next_deadline() is None


def test_star_site_settings_reach_sites_not_listed(tmp_path: Path) -> None:
    """sites."*" holds the defaults of every site not listed, live as in replay."""
    from stream.detectors.operations import OccupancyDetector

    doc = {**CONFIG, "sites": {"*": {"timezone": "UTC", "quiet_hours": False, "capacity": 2}}}
    store = StateStore(tmp_path / "s.sqlite")
    proc = Processor(parse_config(doc), store, ManualClock(T0 + 60_000), [OccupancyDetector()])
    assert proc.ctx.site_config("site-b")["capacity"] == 2
    three_in = ev(
        1, "counts", site="site-b", kind="counter", device="counter-1", resident=None,
        values={"in": 3, "out": 0},
    )  # fmt: skip
    proc.handle_message(events_topic("site-b", "gw-1"), encode_batch([three_in]))
    [alert] = store.open_alerts()
    assert (alert.condition, alert.site) == ("crowding", "site-b")
    assert "3 people inside, the room holds 2" in alert.reason
    store.close()
