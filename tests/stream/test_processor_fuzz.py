"""Bad input never kills the processor: arbitrary payloads on every channel it reads,
through every built-in detector, are handled or dead-lettered, and it keeps working."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles.events import encode_batch, event_to_dict
from device_profiles.topics import ack_topic, events_topic, health_topic, status_topic
from stream.clock import ManualClock
from stream.config import parse_config
from stream.processor import Processor
from stream.registry import build_detectors
from stream.state import StateStore
from tests.stream.helpers import T0, ev

CONFIG: dict[str, Any] = {
    "sites": {"site-a": {"timezone": "Asia/Shanghai", "quiet_hours": False}},
    "telemetry": {"enabled": True},
    "residents": {"res-1": {"site": "site-a", "lives_alone": True}},
}

TOPICS = [
    events_topic("site-a", "gw-1"),
    status_topic("site-a", "gw-1"),
    health_topic("site-a", "gw-1"),
    ack_topic("site-a", "app-1"),
    "carewatch/v1/site-a",
    "elsewhere/x",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)

# Valid events of every kind the detectors read, to be damaged one field at a time.
SAMPLES = [
    event_to_dict(ev(1, "press")),
    event_to_dict(ev(2, "heartbeat", values={"battery": 80, "activity": 3})),
    event_to_dict(
        ev(3, "contact", kind="door", device="door-1", values={"contact": False, "open": True})
    ),
    event_to_dict(ev(4, "checkin", kind="face", device="face-1", values={"person": "res-1"})),
    event_to_dict(
        ev(5, "counts", kind="counter", device="c-1", resident=None, values={"in": 3, "out": 1})
    ),
    event_to_dict(
        ev(
            6,
            "impact",
            values={"rate_hz": 50, "range_g": 8.0, "trigger_index": 1, "x": [0, 1], "y": [0, 0]},
        )
    ),
]


@st.composite
def damaged_batches(draw: st.DrawFn) -> bytes:
    events = []
    for _ in range(draw(st.integers(1, 3))):
        event = dict(draw(st.sampled_from(SAMPLES)))
        key = draw(st.sampled_from([*sorted(event), "values", "extra"]))
        if draw(st.booleans()):
            event[key] = draw(json_values)
        elif key in event:
            del event[key]
        if draw(st.booleans()) and isinstance(event.get("values"), dict):
            values = dict(event["values"])
            values[draw(st.text(max_size=8))] = draw(json_values)
            event["values"] = values
        events.append(event)
    return json.dumps({"events": events}, default=str).encode()


payloads = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v, default=str).encode())
    | damaged_batches()
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.sampled_from(TOPICS), payloads), min_size=1, max_size=6))
def test_arbitrary_messages_are_handled_or_dead_lettered(
    messages: list[tuple[str, bytes]],
) -> None:
    config = parse_config(CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp) / "s.sqlite", synchronous="normal")
        try:
            clock = ManualClock(T0 + 10_000)
            proc = Processor(config, store, clock, build_detectors(config.detectors))
            for topic, payload in messages:
                out = proc.handle_message(topic, payload)  # never raises
                assert min(out.accepted, out.duplicates, out.late, out.dead) >= 0
            # Timers run over whatever was stored, and a good message still works.
            clock.set(T0 + 6 * 3_600_000)
            proc.run_due()
            good = proc.handle_message(
                events_topic("site-a", "gw-9"), encode_batch([ev(1, "press", gateway="gw-9")])
            )
            assert good.accepted == 1
            assert any(a.condition == "emergency" for a in store.open_alerts())
        finally:
            store.close()
