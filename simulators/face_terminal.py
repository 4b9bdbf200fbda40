"""A face-recognition check-in terminal pushing its vendor's JSON events over MQTT.

:class:`FaceTerminalSimulator` publishes what the profile's ``face_terminal`` codec
encodes (for the shipped Hikvision profile: an ``EventNotificationAlert`` with an
``AccessControllerEvent``) on the profile's topic::

    async with FaceTerminalSimulator(profile, "gate-1", host=broker.host,
                                     port=broker.port) as sim:
        await sim.checkin("m0042", score=0.93, liveness=True)
        await sim.checkin("m0077", score=0.41, at=datetime(2024, 3, 1, 8, 30, tzinfo=CST))
        await sim.checkin(None, score=0.2, verified=False)   # a face nobody matches
        await sim.heartbeat()
        await sim.inject("bad_time")

The capture time defaults to now and is written with the profile's UTC offset
(+08:00). Faults: those of :class:`~simulators.mqtt_device.MqttDeviceSimulator` plus
``garbage``, ``truncated``, ``wrong_type`` (the person id as a number) and
``bad_time`` (a capture time that is not ISO-8601).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import msgspec

from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.face_terminal import CHECKIN, HEARTBEAT, FaceTerminalCodec, set_path
from device_profiles.errors import ProfileError
from device_profiles.events import Value
from device_profiles.profiles import Profile
from simulators.mqtt_device import MqttDeviceSimulator

#: Similarity at which the simulated terminal says "face authentication passed".
MATCH_THRESHOLD = 0.8


def to_ms(at: datetime | int | None) -> int:
    """A capture time as ms UTC: an aware datetime, ms already, or None for now."""
    if at is None:
        return int(time.time() * 1000)
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("capture time must be timezone-aware")
        return int(at.timestamp() * 1000)
    return int(at)


class FaceTerminalSimulator(MqttDeviceSimulator):
    """One face terminal on an MQTT broker.

    ``terminal_id`` is the id the terminal puts in its events (the Hikvision profile
    reads the MAC address); ``topic`` overrides the profile's topic template. Other
    keyword arguments go to :class:`~simulators.mqtt_device.MqttDeviceSimulator`.
    """

    payload_faults = frozenset({"garbage", "truncated", "wrong_type", "bad_time"})
    actions = MqttDeviceSimulator.actions | {"checkin", "heartbeat"}

    def __init__(
        self,
        profile: Profile,
        device: str,
        *,
        terminal_id: str = "44:19:b6:00:00:01",
        topic: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(profile, device, **kwargs)
        if profile.codec != FaceTerminalCodec.name:
            raise ProfileError(
                f"{type(self).__name__} needs a face_terminal profile, not {profile.codec!r}",
                file=profile.source,
                path="codec",
            )
        self.face = FaceTerminalCodec(profile, topic=topic)
        self.codec = self.face
        self.terminal_id = terminal_id
        self._names = {r.res.name for r in self.face.reads}

    def checkin_reading(
        self,
        person: str | None,
        *,
        score: float | None = 0.95,
        liveness: bool | float | None = True,
        verified: bool | None = None,
        at: datetime | int | None = None,
    ) -> Reading:
        """The check-in reading for these values (only those the profile carries).

        ``verified`` defaults to the terminal's own rule: a known person whose score
        reaches :data:`MATCH_THRESHOLD` and whose liveness check did not fail.
        """
        if verified is None:
            verified = (
                person is not None
                and (score is None or score >= MATCH_THRESHOLD)
                and liveness is not False
            )
        wanted: dict[str, Value] = {"terminal": self.terminal_id, "verified": verified}
        if person is not None:
            wanted["person"] = person
        if score is not None:
            wanted["score"] = score
        if liveness is not None:
            wanted["liveness"] = liveness
        values = {k: v for k, v in wanted.items() if k in self._names}
        return Reading(CHECKIN, values, time=to_ms(at), source=self.terminal_id)

    async def checkin(
        self,
        person: str | None,
        *,
        score: float | None = 0.95,
        liveness: bool | float | None = True,
        verified: bool | None = None,
        at: datetime | int | None = None,
    ) -> None:
        """``person`` shows their face at the terminal (see :meth:`checkin_reading`)."""
        reading = self.checkin_reading(
            person, score=score, liveness=liveness, verified=verified, at=at
        )
        await self.publish(self.face.encode(reading, self.device))

    async def heartbeat(self, at: datetime | int | None = None) -> None:
        """The terminal's keep-alive message."""
        values: dict[str, Value] = {"terminal": self.terminal_id}
        reading = Reading(HEARTBEAT, values, time=to_ms(at))
        await self.publish(self.face.encode(reading, self.device))

    def fault_message(self, fault: str) -> MqttMessage:
        """Malformed check-in events on the terminal's topic."""
        good = self.face.encode(self.checkin_reading("m-fault"), self.device)
        if fault == "garbage":
            payload = b"\x89PNG\r\n\x1a\n\x00\x00 not an event"
        elif fault == "truncated":
            payload = good.payload[: max(1, len(good.payload) * 2 // 3)]
        elif fault in ("wrong_type", "bad_time"):
            doc: dict[str, Any] = msgspec.json.decode(good.payload)
            if fault == "wrong_type":
                # The person id as a number; a profile without one gets a numeric terminal.
                target = next(
                    (r for r in self.face.reads if r.res.name in ("person", "terminal")),
                    None,
                )
                if target is None:
                    return super().fault_message(fault)
                set_path(doc, target.path, 42)
            else:
                set_path(doc, self.face.time_path, "01/03/2024 08:30:05")
            payload = msgspec.json.encode(doc)
        else:
            return super().fault_message(fault)
        return MqttMessage(good.topic, payload, good.retain)
