"""End to end through the whole chain: simulators -> edge agent -> Mosquitto -> stream ->
alert topic and InfluxDB.

One run of the chain (module fixture, about 20 s) serves every test here; see
:mod:`tests.chain_helpers` for what runs. Two sites, each with its own ``carewatch agent``
process, one ``carewatch stream`` process with every shipped detector:

- **a fall** (needs the SisFall dataset): a real fall recording (SA01, F01 trial 1, a
  forward slip while walking, 200 Hz) goes through the RF pendant simulator's on-device
  trigger, which uploads its acceleration window in fragments over a PTY; the agent
  reassembles it, the stream's alarm detector scores it with the packaged fall classifier.
  While no classifier is packaged, the detector raises the unconfirmed "impact" alert
  instead, and the test asserts that (it checks which one the stream can load);
- **a silent resident**: Mr Li moves once in front of his Zigbee motion sensor, then
  nothing. His config overrides the fixed limit that applies while there is no history
  (``inactivity: {default_day_limit: 10s, ...}``) instead of the default 6 h;
- **a no-show**: members Ma and Zhou are expected at the center every day by a time
  half a minute to a minute and a half after the chain starts (``daycare: {days, by}``
  in their config fixes the schedule instead of learning it).
  Mrs Ma never checks in: the stream watches configured members from its start, so she
  is expected without any event of hers. Mr Zhou checks in before that time (the
  terminal stamps the capture time, which survives the chain) and must raise nothing.
  The run happens at about 12:00 local time in every case: the sites' timezone is a
  fixed-offset zone chosen when the test starts, so no test depends on the time of day
  it runs at;
- **a crowded room**: 13 people counted in by the Modbus people counter at a center that
  holds 10 (``capacity`` in the site config).

Each condition must appear on the alert topic, as transitions in InfluxDB (measurement
``alerts``, InfluxQL) and with its device events in InfluxDB. Waits poll with deadlines;
nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from carewatch.services import InfluxDBService, MosquittoService
from tests.chain_helpers import (
    CAPACITY,
    CENTER,
    ENTERING,
    HOME,
    SILENCE_LIMIT_S,
    SISFALL_TRAIN,
    Chain,
    local_ms,
    run_chain,
    trigger_windows,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def chain(
    mosquitto: MosquittoService, influxdb: InfluxDBService, tmp_path_factory: pytest.TempPathFactory
) -> Chain:
    """One run of the whole chain, shared by the tests of this module."""
    tag = uuid.uuid4().hex[:10]
    database = f"chain_{tag}"
    influxdb.create_database(database)
    workdir: Path = tmp_path_factory.mktemp("chain")
    return asyncio.run(run_chain(mosquitto, influxdb, database, workdir, tag))


def _raised(chain: Chain, condition: str, subject: str) -> dict[str, Any]:
    alert = chain.raised(condition, subject)
    assert alert is not None, (
        f"no {condition} alert for {subject} on the alert topic; alerts seen: "
        f"{[(a['condition'], a['subject']) for a in chain.alerts().values()]}\n{chain.logs()}"
    )
    return alert


def _assert_in_influx(chain: Chain, alert: dict[str, Any]) -> None:
    """The alert's ``raised`` transition is in the ``alerts`` measurement, tagged right."""
    rows = chain.alert_rows(str(alert["id"]))
    raised = [r for r in rows if r["transition"] == "raised"]
    assert raised, f"no 'raised' transition of {alert['id']} in InfluxDB: {rows}\n{chain.logs()}"
    row = raised[0]
    assert (row["kind"], row["site"], row["severity"]) == (
        alert["condition"],
        alert["site"],
        alert["severity"],
    )
    assert row["resident"] == alert.get("resident")
    assert row["device"] == alert.get("device")


@pytest.mark.dataset
def test_a_real_fall_replayed_through_the_pendant_raises_an_emergency(chain: Chain) -> None:
    if chain.fall_index is None:
        pytest.skip(f"SisFall dataset not found: {SISFALL_TRAIN}")
    # What the pendant's firmware uploads for this recording: the windows of its trigger.
    windows = trigger_windows("oem-rf433-button-pendant", chain.fall_index)
    assert windows, "the on-device trigger fires on this fall recording"
    impacts = chain.events_of("pendant-wang", "impact")
    assert len(impacts) == len(windows), f"impact windows: {impacts}\n{chain.logs()}"
    for impact, window in zip(impacts, windows, strict=True):
        # Fragmented over the RF link, reassembled by the agent: the same window.
        assert (impact.site, impact.resident, impact.urgent) == (CENTER, "wang", True)
        values = impact.values
        assert values["rate_hz"] == 50
        assert values["trigger_index"] == window.trigger_index
        assert values["peak_g"] == pytest.approx(window.peak_g, abs=0.05)
        for axis, sent in (("x", window.x), ("y", window.y), ("z", window.z)):
            got = values[axis]
            assert isinstance(got, list) and len(got) == len(sent)
            assert max(abs(a - b) for a, b in zip(got, sent, strict=True)) < 0.05

    assert chain.broken_model is None, f"the packaged fall model fails: {chain.broken_model}"
    alert = _raised(chain, "emergency", "wang")
    assert (alert["site"], alert["resident"], alert["device"]) == (CENTER, "wang", "pendant-wang")
    assert alert["audience"] == "responders"
    details = alert["details"]
    assert details["reading"] == "impact"
    assert details["seq"] in {e.seq for e in impacts}
    if chain.classifier:
        # A fall the classifier confirmed, with its score in the alert.
        assert chain.threshold is not None
        assert details["trigger"] in ("fall", "fall+still", "fall+press"), alert
        assert details["score"] >= chain.threshold, alert
        assert alert["reason"].startswith("fall detected by the pendant: impact "), alert
        assert "(classifier score " in alert["reason"], alert
    else:
        # No model packaged yet: the impact is alerted, saying it was not confirmed.
        assert details["trigger"] == "impact", alert
        assert "no fall classifier" in alert["reason"], alert
        assert alert["severity"] == "high"

    _assert_in_influx(chain, alert)
    for impact, window in zip(impacts, windows, strict=True):
        assert chain.in_influx(impact), f"impact #{impact.seq} not in InfluxDB"
        (row,) = chain.event_rows(impact)
        # The window itself is not stored, its length is.
        assert row["samples"] == len(window.x) and row["resident"] == "wang"


def test_a_silent_resident_raises_inactivity(chain: Chain) -> None:
    moved = [e for e in chain.events_of("motion-li", "occupancy") if e.values["occupancy"]]
    assert len(moved) == 1, f"expected one motion of Mr Li, got {moved}\n{chain.logs()}"
    (motion,) = moved
    assert (motion.site, motion.resident) == (HOME, "li")

    alert = _raised(chain, "inactivity", "li")
    assert (alert["site"], alert["resident"], alert["severity"]) == (HOME, "li", "high")
    assert alert["audience"] == "responders"
    assert alert["reason"].startswith("no motion activity at home since"), alert["reason"]
    assert "still learning this person's habits" in alert["reason"]
    assert alert["details"]["last"] == "motion (living room)"
    assert alert["details"]["learned"] is False
    # Raised once the silence reached the limit, not before (event time vs detector time).
    assert alert["signal_time"] >= motion.time + SILENCE_LIMIT_S * 1000

    _assert_in_influx(chain, alert)
    assert chain.in_influx(motion), "the motion event is not in InfluxDB"
    (row,) = chain.event_rows(motion)
    assert row["occupancy"] is True and row["resident"] == "li"


def test_a_member_who_did_not_check_in_raises_a_noshow_and_one_who_did_none(
    chain: Chain,
) -> None:
    checkins = {e.resident: e for e in chain.events_of("face-gate", "checkin")}
    assert set(checkins) == {"zhou"}, f"check-ins seen: {checkins}\n{chain.logs()}"
    # The terminal's capture time survives the chain, before the time he was expected by.
    today = datetime.now(chain.zone).date()
    assert checkins["zhou"].time < local_ms(chain.zone, today, chain.daycare_by)

    alert = _raised(chain, "noshow", "ma")
    assert (alert["site"], alert["resident"]) == (CENTER, "ma")
    assert alert["severity"] == "high"  # she lives alone
    assert alert["audience"] == "responders"
    assert alert["reason"].startswith("has not checked in by"), alert["reason"]
    assert f"is expected by {chain.daycare_by}" in alert["reason"]
    assert chain.messages_for("noshow", "zhou") == [], "Zhou checked in: no alert expected"

    _assert_in_influx(chain, alert)
    for event in checkins.values():
        assert chain.in_influx(event), f"check-in of {event.resident} not in InfluxDB"
        (row,) = chain.event_rows(event)
        assert row["resident"] == event.resident and row["person"] == event.resident


def test_a_crowded_room_raises_crowding_for_operations(chain: Chain) -> None:
    counts = [e for e in chain.events_of("counter-hall", "counts") if e.values["in"]]
    entered = [e.values["in"] for e in counts]
    assert all(isinstance(n, int) for n in entered)
    assert sum(n for n in entered if isinstance(n, int)) == sum(ENTERING), f"{chain.logs()}"

    alert = _raised(chain, "crowding", CENTER)
    assert alert["audience"] == "operations"
    assert alert["severity"] == "warning"
    # A new site has no learned drift yet: nothing is taken off what the counters saw.
    assert alert["details"] == {
        "occupancy": sum(ENTERING),
        "capacity": CAPACITY,
        "counted": sum(ENTERING),
        "missed_exits": 0,
    }
    assert alert["reason"] == f"{sum(ENTERING)} people inside, the room holds {CAPACITY}"

    _assert_in_influx(chain, alert)
    for event in counts:
        assert chain.in_influx(event), f"counts #{event.seq} not in InfluxDB"
    (total,) = chain.rows(
        'SELECT sum("in") AS people FROM "footfall" WHERE "device" = \'counter-hall\''
    )
    assert total["people"] == sum(ENTERING)


def test_no_unexpected_alerts_for_responders(chain: Chain) -> None:
    """Emergencies only for the fall, and no responder alert that was not expected."""
    alerts = chain.alerts().values()
    expected = {(e.condition, e.subject) for e in chain.expected}
    emergencies = {a["subject"] for a in alerts if a["condition"] == "emergency"}
    assert emergencies == ({"wang"} if chain.fall_index is not None else set()), emergencies
    responders = {(a["condition"], a["subject"]) for a in alerts if a["audience"] == "responders"}
    assert responders <= expected, f"unexpected alerts: {responders - expected}"
    assert not [p for p in chain.problems if "failed" in p], chain.problems
