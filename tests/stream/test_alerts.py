"""Alert manager: lifecycle, dedup, escalation, reminders, quiet hours, silences."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.alerts import AlertManager, AlertNotFound, AlertStateError
from stream.config import StreamConfig, parse_config
from stream.detectors.base import AlertSignal, Audience, Severity
from stream.state import AlertRecord, Silence, StateStore

# 2026-01-01 04:00 UTC = 12:00 in Asia/Shanghai: daytime at the site.
NOON = 1_767_240_000_000
MIN = 60_000

CONFIG: dict[str, Any] = {
    "notifiers": {
        "desk-hook": {"type": "webhook", "url": "http://127.0.0.1:9/desk"},
        "boss-hook": {"type": "webhook", "url": "http://127.0.0.1:9/boss"},
        "ops-hook": {"type": "webhook", "url": "http://127.0.0.1:9/ops"},
    },
    "recipients": {
        "desk": {"notifiers": ["desk-hook"]},
        "boss": {"notifiers": ["boss-hook"]},
        "ops": {"notifiers": ["ops-hook"]},
    },
    "policies": {
        "default": {
            "tiers": [{"recipients": ["desk"]}, {"recipients": ["boss"]}],
            "operations": ["ops"],
            "ack_timeout": {"critical": "3m", "high": "15m", "warning": "2h"},
            "reminder": {"critical": "2m", "high": "10m", "warning": 0},
        }
    },
    "sites": {
        "site-a": {
            "timezone": "Asia/Shanghai",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
        }
    },
}


@pytest.fixture
def config() -> StreamConfig:
    return parse_config(CONFIG)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.sqlite", synchronous="normal")
    yield s
    s.close()


@pytest.fixture
def manager(store: StateStore, config: StreamConfig) -> AlertManager:
    return AlertManager(store, config)


def sos(t: int = NOON, **kw: Any) -> AlertSignal:
    base: dict[str, Any] = {
        "condition": "emergency",
        "subject": "res-1",
        "site": "site-a",
        "time": t,
        "severity": Severity.CRITICAL,
        "reason": "SOS button pressed on the pendant",
        "resident": "res-1",
        "device": "pendant-1",
    }
    base.update(kw)
    return AlertSignal(**base)


def battery(t: int = NOON) -> AlertSignal:
    return AlertSignal(
        condition="low_battery",
        subject="door-1",
        site="site-a",
        time=t,
        severity=Severity.WARNING,
        reason="battery at 8 %",
        audience=Audience.OPERATIONS,
        device="door-1",
    )


def apply(manager: AlertManager, signal: AlertSignal, now: int) -> AlertRecord:
    with manager.store.transaction():
        alert = manager.apply(signal, now)
    assert alert is not None
    return alert


def tick(manager: AlertManager, now: int) -> None:
    with manager.store.transaction():
        manager.tick(now)


def pages(store: StateStore) -> list[tuple[str, str, str]]:
    """(recipient, event, alert state) of every non-MQTT notification, in order."""
    out = []
    for row in store.outbox():
        if row.notifier == "mqtt":
            continue
        body = json.loads(row.payload)
        out.append((row.recipient, body["event"], body["alert"]["state"]))
    return out


def mqtt_events(store: StateStore) -> list[str]:
    return [json.loads(r.payload)["event"] for r in store.outbox() if r.notifier == "mqtt"]


def test_raise_pages_tier_one_and_publishes(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(), NOON)
    assert alert.state == "raised"
    assert alert.tier == 0
    assert pages(store) == [("desk", "raised", "raised")]
    assert mqtt_events(store) == ["raised"]
    assert store.transitions(alert.id)[0]["kind"] == "raised"
    # outbox ids are the idempotency keys: alert, transition, recipient, notifier
    ids = [r.id for r in store.outbox()]
    assert f"{alert.id}.1.desk.desk-hook" in ids
    assert f"{alert.id}.1.mqtt" in ids


def test_repeat_updates_instead_of_paging(manager: AlertManager, store: StateStore) -> None:
    first = apply(manager, sos(), NOON)
    again = apply(manager, sos(reason="pressed again"), NOON + 10_000)
    assert again.id == first.id
    assert again.count == 2
    assert again.reason == "pressed again"
    assert pages(store) == [("desk", "raised", "raised")]
    assert mqtt_events(store) == ["raised", "updated"]
    assert len(store.open_alerts()) == 1


def test_escalates_to_tier_two_then_reminds_both(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(), NOON)
    assert alert.escalate_at == NOON + 3 * MIN
    assert alert.remind_at == NOON + 2 * MIN
    tick(manager, NOON + 2 * MIN)  # reminder to tier 1
    tick(manager, NOON + 3 * MIN)  # escalation to tier 2
    assert pages(store) == [
        ("desk", "raised", "raised"),
        ("desk", "reminder", "raised"),
        ("boss", "escalated", "raised"),
    ]
    stored = store.get_alert(alert.id)
    assert stored is not None and stored.tier == 1
    assert stored.notified == ["desk", "boss"]
    assert stored.escalate_at is None  # no third tier
    tick(manager, NOON + 5 * MIN)
    assert pages(store)[-2:] == [("desk", "reminder", "raised"), ("boss", "reminder", "raised")]


def test_ack_stops_reminders_and_escalation(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(), NOON)
    with store.transaction():
        acked, changed = manager.acknowledge(alert.id, "nurse-li", NOON + MIN, source="api")
    assert changed and acked.state == "acknowledged"
    assert acked.acked_by == "nurse-li" and acked.acked_at == NOON + MIN
    assert manager.next_deadline() is None
    for minutes in (2, 3, 10, 60):
        tick(manager, NOON + minutes * MIN)
    assert pages(store) == [("desk", "raised", "raised"), ("desk", "acknowledged", "acknowledged")]
    # acknowledging again changes nothing
    with store.transaction():
        _, changed = manager.acknowledge(alert.id, "someone", NOON + 2 * MIN, source="mqtt")
    assert not changed
    trail = [(t["kind"], t["by"], t["source"]) for t in store.transitions(alert.id)]
    assert trail == [("raised", None, "detector"), ("acknowledged", "nurse-li", "api")]


def test_resolve_then_new_alert_for_same_key(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(), NOON)
    with store.transaction():
        resolved, changed = manager.resolve(alert.id, "nurse-li", NOON + MIN, source="api")
    assert changed and resolved.state == "resolved"
    assert pages(store)[-1] == ("desk", "resolved", "resolved")
    with store.transaction(), pytest.raises(AlertStateError):
        manager.acknowledge(alert.id, "x", NOON + 2 * MIN, source="api")
    second = apply(manager, sos(), NOON + 5 * MIN)
    assert second.id != alert.id
    assert second.state == "raised"


def test_clear_signal_auto_resolves(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(severity=Severity.HIGH, condition="silence"), NOON)
    cleared = apply(
        manager,
        sos(severity=Severity.HIGH, condition="silence", action="clear", reason="door opened"),
        NOON + MIN,
    )
    assert cleared.id == alert.id
    assert cleared.state == "resolved"
    assert cleared.resolved_by == "auto"
    with store.transaction():
        assert manager.apply(sos(condition="silence", action="clear"), NOON + 2 * MIN) is None


def test_higher_severity_repages_with_shorter_times(
    manager: AlertManager, store: StateStore
) -> None:
    alert = apply(manager, sos(severity=Severity.HIGH, reason="fall detected"), NOON)
    assert alert.escalate_at == NOON + 15 * MIN
    worse = apply(manager, sos(reason="no movement since the fall"), NOON + 2 * MIN)
    assert worse.severity == "critical"
    assert worse.escalate_at == NOON + 5 * MIN
    assert pages(store) == [("desk", "raised", "raised"), ("desk", "severity", "raised")]


def test_unknown_alert_and_wrong_site(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(), NOON)
    with store.transaction(), pytest.raises(AlertNotFound):
        manager.acknowledge("nope", "x", NOON, source="api")
    with store.transaction(), pytest.raises(AlertNotFound):
        manager.acknowledge(alert.id, "x", NOON, source="mqtt", site="site-b")


# --- quiet hours ----------------------------------------------------------------------------

# 2026-01-01 16:00 UTC = 00:00 in Shanghai (inside 22:00-07:00); quiet ends 23:00 UTC.
MIDNIGHT_LOCAL = 1_767_283_200_000
QUIET_END = 1_767_308_400_000


def test_quiet_until(manager: AlertManager) -> None:
    assert manager.quiet_until("site-a", NOON) is None
    assert manager.quiet_until("site-a", MIDNIGHT_LOCAL) == QUIET_END
    # 21:59 local is still day
    assert manager.quiet_until("site-a", MIDNIGHT_LOCAL - 121 * MIN) is None
    assert manager.quiet_until("site-a", MIDNIGHT_LOCAL - 120 * MIN) == QUIET_END


def test_sos_pages_at_night(manager: AlertManager, store: StateStore) -> None:
    apply(manager, sos(t=MIDNIGHT_LOCAL), MIDNIGHT_LOCAL)
    assert pages(store) == [("desk", "raised", "raised")]


def test_low_battery_waits_for_the_morning(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, battery(MIDNIGHT_LOCAL), MIDNIGHT_LOCAL)
    assert pages(store) == []
    assert mqtt_events(store) == ["raised"]  # dashboards see it at once
    assert alert.page_at == QUIET_END
    tick(manager, QUIET_END - 1)
    assert pages(store) == []
    tick(manager, QUIET_END)
    assert pages(store) == [("ops", "raised", "raised")]  # operations staff, not the desk


def test_upgrade_at_night_pages_once_and_keeps_the_tier(
    manager: AlertManager, store: StateStore
) -> None:
    # A warning waits for the morning; becoming critical at night pages at once...
    alert = apply(manager, sos(severity=Severity.WARNING, reason="odd"), MIDNIGHT_LOCAL)
    assert alert.page_at == QUIET_END and pages(store) == []
    worse = apply(manager, sos(t=MIDNIGHT_LOCAL + 5 * MIN), MIDNIGHT_LOCAL + 5 * MIN)
    assert worse.tier == 0 and worse.page_at is None
    tick(manager, MIDNIGHT_LOCAL + 8 * MIN)  # escalation to tier 2 (3 min for critical)
    assert store.get_alert(alert.id).tier == 1  # type: ignore[union-attr]
    # ...and the morning does not page it again nor set the escalation back to tier 1.
    tick(manager, QUIET_END)
    stored = store.get_alert(alert.id)
    assert stored is not None and stored.tier == 1
    kinds = [t["kind"] for t in store.transitions(alert.id)]
    assert kinds == ["raised", "severity", "escalated", "reminder"]
    assert [p for p in pages(store) if p[1] in ("raised", "paged", "escalated")] == [
        ("desk", "raised", "raised"),
        ("boss", "escalated", "raised"),
    ]


def test_info_never_pages(manager: AlertManager, store: StateStore) -> None:
    alert = apply(manager, sos(severity=Severity.INFO, condition="note"), NOON)
    assert pages(store) == []
    assert alert.next_action_at() is None


# --- silences -------------------------------------------------------------------------------


def silence(store: StateStore, ends: int, **kw: Any) -> None:
    with store.transaction():
        store.put_silence(
            Silence(
                id="s1",
                site="site-a",
                starts=NOON - MIN,
                ends=ends,
                created_by="tech",
                created_at=NOON,
                **kw,
            )
        )


def test_silenced_device_pages_nobody_until_expiry(
    manager: AlertManager, store: StateStore
) -> None:
    silence(store, NOON + 30 * MIN, device="pendant-1")
    alert = apply(manager, sos(), NOON)
    assert alert.silenced
    assert pages(store) == []
    assert mqtt_events(store) == ["raised"]
    assert alert.page_at == NOON + 30 * MIN
    tick(manager, NOON + 30 * MIN)
    assert pages(store) == [("desk", "raised", "raised")]
    assert store.get_alert(alert.id).silenced is False  # type: ignore[union-attr]


def test_silence_of_other_device_does_not_apply(manager: AlertManager, store: StateStore) -> None:
    silence(store, NOON + 30 * MIN, device="door-9")
    apply(manager, sos(), NOON)
    assert pages(store) == [("desk", "raised", "raised")]


def test_deleting_silence_pages_at_once(manager: AlertManager, store: StateStore) -> None:
    silence(store, NOON + 60 * MIN)
    apply(manager, sos(), NOON)
    with store.transaction():
        assert store.delete_silence("s1")
        manager.silences_changed(NOON + MIN)
    tick(manager, NOON + MIN)
    assert pages(store) == [("desk", "raised", "raised")]


def test_silence_holds_reminders_of_a_paged_alert(manager: AlertManager, store: StateStore) -> None:
    apply(manager, sos(), NOON)
    silence(store, NOON + 20 * MIN)
    tick(manager, NOON + 2 * MIN)
    tick(manager, NOON + 3 * MIN)
    assert pages(store) == [("desk", "raised", "raised")]
    tick(manager, NOON + 20 * MIN)
    assert [p[1] for p in pages(store)] == ["raised", "escalated"]


def test_an_upgrade_during_a_silence_waits_for_its_end(
    manager: AlertManager, store: StateStore
) -> None:
    alert = apply(manager, sos(severity=Severity.HIGH, reason="fall detected"), NOON)
    silence(store, NOON + 30 * MIN, device="pendant-1")
    apply(manager, sos(t=NOON + 2 * MIN, reason="no movement since the fall"), NOON + 2 * MIN)
    assert pages(store) == [("desk", "raised", "raised")]  # nobody paged during it
    assert mqtt_events(store) == ["raised", "severity"]  # dashboards see it at once
    tick(manager, NOON + 10 * MIN)
    assert len(pages(store)) == 1
    tick(manager, NOON + 30 * MIN)  # the silence ends: the held escalation goes out
    tick(manager, NOON + 32 * MIN)  # and the reminder, at the new severity, to everyone
    later = [json.loads(r.payload) for r in store.outbox() if r.notifier != "mqtt"][1:]
    assert [(b["event"], b["alert"]["severity"]) for b in later] == [
        ("escalated", "critical"),
        ("reminder", "critical"),
        ("reminder", "critical"),
    ]
    assert {r.recipient for r in store.outbox() if r.notifier != "mqtt"} == {"desk", "boss"}
    assert store.get_alert(alert.id).tier == 1  # type: ignore[union-attr]


def test_an_upgrade_at_night_below_night_paging_waits_for_the_morning(
    store: StateStore,
) -> None:
    # A policy where only critical pages at night: a warning paged in the evening that
    # becomes high at midnight is told in the morning, not at midnight.
    cfg = json.loads(json.dumps(CONFIG))
    cfg["policies"]["default"]["night_paging"] = ["critical"]
    night = AlertManager(store, parse_config(cfg))
    evening = MIDNIGHT_LOCAL - 150 * MIN  # 21:30 local
    alert = apply(night, sos(t=evening, severity=Severity.WARNING, reason="odd"), evening)
    assert pages(store) == [("desk", "raised", "raised")]
    apply(night, sos(t=MIDNIGHT_LOCAL, severity=Severity.HIGH), MIDNIGHT_LOCAL)
    tick(night, MIDNIGHT_LOCAL + 60 * MIN)
    assert pages(store) == [("desk", "raised", "raised")]
    tick(night, QUIET_END)  # the held escalation (high: 15 min) goes out first
    tick(night, QUIET_END + 10 * MIN)  # then reminders to everyone paged
    assert pages(store)[1:] == [
        ("boss", "escalated", "raised"),
        ("desk", "reminder", "raised"),
        ("boss", "reminder", "raised"),
    ]
    assert store.get_alert(alert.id).severity == "high"  # type: ignore[union-attr]


def test_an_upgrade_pages_through_quiet_hours_when_the_new_severity_may(
    manager: AlertManager, store: StateStore
) -> None:
    evening = MIDNIGHT_LOCAL - 150 * MIN
    apply(manager, sos(t=evening, severity=Severity.WARNING, reason="odd"), evening)
    apply(manager, sos(t=MIDNIGHT_LOCAL), MIDNIGHT_LOCAL)  # critical pages at night
    assert pages(store) == [("desk", "raised", "raised"), ("desk", "severity", "raised")]


def test_deleting_a_silence_releases_a_held_escalation(
    manager: AlertManager, store: StateStore
) -> None:
    alert = apply(manager, sos(), NOON)  # reminder at +2 min, escalation at +3 min
    silence(store, NOON + 60 * MIN)
    tick(manager, NOON + 2 * MIN)
    tick(manager, NOON + 3 * MIN)
    assert pages(store) == [("desk", "raised", "raised")]
    assert manager.next_deadline() == NOON + 60 * MIN  # held until the silence ends
    with store.transaction():
        assert store.delete_silence("s1")
        manager.silences_changed(NOON + 5 * MIN)
    tick(manager, NOON + 5 * MIN)
    # The escalation due at +3 min happens now, not at the deleted silence's end.
    assert pages(store)[1:] == [("boss", "escalated", "raised")]
    stored = store.get_alert(alert.id)
    assert stored is not None and stored.tier == 1
    assert stored.escalate_at is None and stored.remind_at == NOON + 7 * MIN


def test_deleting_a_silence_brings_no_timer_forward(
    manager: AlertManager, store: StateStore
) -> None:
    apply(manager, sos(), NOON)
    silence(store, NOON + 60 * MIN)
    tick(manager, NOON + 2 * MIN)  # the reminder falls due: held
    with store.transaction():
        assert store.delete_silence("s1")
        manager.silences_changed(NOON + 2 * MIN + 30_000)
    tick(manager, NOON + 2 * MIN + 30_000)
    # the held reminder goes out; the escalation (due at +3 min) is not brought forward
    assert pages(store)[1:] == [("desk", "reminder", "raised")]
    tick(manager, NOON + 3 * MIN)
    assert pages(store)[-1] == ("boss", "escalated", "raised")


# --- persistence ----------------------------------------------------------------------------


def test_timers_survive_reopen(tmp_path: Path, config: StreamConfig) -> None:
    path = tmp_path / "s.sqlite"
    store = StateStore(path)
    manager = AlertManager(store, config)
    alert = apply(manager, sos(), NOON)
    store.close()
    # "restart" long after the escalation was due: it fires on the first tick
    store = StateStore(path)
    manager = AlertManager(store, config)
    assert manager.next_deadline() == NOON + 2 * MIN
    tick(manager, NOON + 60 * MIN)
    again = store.get_alert(alert.id)
    assert again is not None and again.tier == 1
    store.close()


def test_one_open_alert_per_key_is_enforced_by_the_database(store: StateStore) -> None:
    import sqlite3

    base = dict(
        key="k", site="s", condition="c", subject="x", state="raised", severity="high",
        audience="responders", reason="r", raised_at=1, updated_at=1, signal_time=1,
    )  # fmt: skip
    with store.transaction():
        store.put_alert(AlertRecord(id="a1", **base))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.put_alert(AlertRecord(id="a2", **base))  # type: ignore[arg-type]


def test_responder_notes_reach_webhooks_and_robots(
    manager: AlertManager, store: StateStore
) -> None:
    from stream.notifiers import render

    alert = apply(manager, sos(), NOON)
    with store.transaction():
        manager.acknowledge(alert.id, "nurse-li", NOON + MIN, source="mqtt", note="on my way")
        manager.resolve(alert.id, "nurse-li", NOON + 9 * MIN, source="api", note="false alarm")
    bodies = [json.loads(r.payload) for r in store.outbox() if r.notifier == "desk-hook"]
    assert [(b["event"], b["by"], b["note"]) for b in bodies] == [
        ("raised", None, None),
        ("acknowledged", "nurse-li", "on my way"),
        ("resolved", "nurse-li", "false alarm"),
    ]
    assert "> note: on my way" in render.markdown(bodies[1])
    assert "false alarm" in render.plain(bodies[2])


def test_operations_never_page_at_night_even_without_quiet_hours(tmp_path: Path) -> None:
    doc = {**CONFIG, "sites": {"site-a": {"timezone": "Asia/Shanghai", "quiet_hours": False}}}
    store = StateStore(tmp_path / "s.sqlite", synchronous="normal")
    manager = AlertManager(store, parse_config(doc))
    try:
        # A 24-hour desk: an SOS at midnight pages at once (no quiet hours at all)...
        apply(manager, sos(MIDNIGHT_LOCAL), MIDNIGHT_LOCAL)
        assert pages(store) == [("desk", "raised", "raised")]
        # ...but a low battery waits for 07:00 local all the same.
        alert = apply(manager, battery(MIDNIGHT_LOCAL), MIDNIGHT_LOCAL)
        assert alert.page_at == QUIET_END
        tick(manager, QUIET_END)
        assert pages(store)[-1] == ("ops", "raised", "raised")
    finally:
        store.close()
