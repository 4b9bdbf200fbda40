"""Zigbee sensors as Zigbee2MQTT publishes them: door contacts and PIR motion sensors.

:class:`Zigbee2MqttSimulator` plays one Zigbee device behind a Zigbee2MQTT bridge on a
real broker: every change publishes the device's *whole* state object on
``<base>/<friendly_name>`` (as Zigbee2MQTT does), encoded by the profile's
``zigbee2mqtt`` codec, and availability is published retained on
``<base>/<friendly_name>/availability`` whenever the simulator (re)connects or the
device goes offline / comes back::

    async with Zigbee2MqttSimulator(profile, "door-3", friendly_name="flat3_door",
                                    host=broker.host, port=broker.port) as sim:
        await sim.open_door()
        await sim.close_door()
        await sim.set_battery(15)
        await sim.inject("garbage")          # then truncated, wrong_type, duplicate...
        await sim.go_offline()

Faults: those of :class:`~simulators.mqtt_device.MqttDeviceSimulator` plus ``garbage``
(non-JSON bytes), ``truncated`` (the state JSON cut short), ``wrong_type`` (the
primary property and battery as strings) and ``battery_drain`` (battery down by
``drain_step`` points and published; ``battery_low`` set below 20 % where the model
reports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec

from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.zigbee2mqtt import AVAILABILITY, Zigbee2MqttCodec, availability_topic
from device_profiles.errors import ProfileError
from device_profiles.events import Value
from device_profiles.profiles import Profile
from simulators.mqtt_device import MqttDeviceSimulator, MqttFault

#: Properties real devices send besides what carewatch reads (published when the
#: profile lists them as ignored), with plausible values.
DEFAULT_EXTRAS: Mapping[str, Value] = {
    "voltage": 3000,
    "device_temperature": 25,
    "power_outage_count": 0,
    "illuminance": 35,
    "illuminance_lux": 35,
}
LOW_BATTERY_PCT = 20


class Zigbee2MqttSimulator(MqttDeviceSimulator):
    """One Zigbee2MQTT device (contact or occupancy sensor) on an MQTT broker.

    ``friendly_name`` is the device's name in Zigbee2MQTT (default: ``device``);
    ``base_topic`` overrides the profile's (``zigbee2mqtt``); ``legacy_availability``
    publishes bare ``online``/``offline`` like Zigbee2MQTT before 1.27; ``extras``
    overrides the additional properties published with the state. Other keyword
    arguments go to :class:`~simulators.mqtt_device.MqttDeviceSimulator`.
    """

    payload_faults = frozenset({"garbage", "truncated", "wrong_type"})
    actions = MqttDeviceSimulator.actions | {
        "open_door",
        "close_door",
        "motion",
        "clear_motion",
        "set_battery",
        "drain_battery",
        "tamper",
        "go_offline",
        "go_online",
        "report",
    }

    def __init__(
        self,
        profile: Profile,
        device: str,
        *,
        friendly_name: str | None = None,
        base_topic: str | None = None,
        legacy_availability: bool = False,
        extras: Mapping[str, Value] | None = None,
        drain_step: int = 20,
        **kwargs: Any,
    ):
        super().__init__(profile, device, **kwargs)
        if profile.codec != Zigbee2MqttCodec.name:
            raise ProfileError(
                f"{type(self).__name__} needs a zigbee2mqtt profile, not {profile.codec!r}",
                file=profile.source,
                path="codec",
            )
        self.z2m = Zigbee2MqttCodec(profile, base_topic=base_topic)
        self.codec = self.z2m
        self.friendly_name = friendly_name or device
        self.legacy_availability = legacy_availability
        self.drain_step = drain_step
        self.online = True
        reads = set(self.z2m.paths.values())
        self.state: dict[str, Value] = {}
        defaults: dict[str, Value] = {
            "contact": True,  # closed
            "occupancy": False,
            "battery": 100,
            "battery_low": False,
            "tamper": False,
            "linkquality": 120,
        }
        for name in self.z2m.paths.values():
            self.state[name] = defaults.get(name, 0)
        if extras is None:
            extras = {k: v for k, v in DEFAULT_EXTRAS.items() if k in self.z2m.ignore}
        self.extras = dict(extras)
        self._reads = reads

    # -- what goes on the wire -----------------------------------------------------------

    def state_message(self) -> MqttMessage:
        """The full-state message Zigbee2MQTT would publish now."""
        values = {**self.state, **self.extras}
        reading = Reading(self.z2m.reading, values, source=self.friendly_name)
        return self.z2m.encode(reading, self.device)

    def availability_message(self) -> MqttMessage:
        """The retained availability message for the current online state."""
        if self.legacy_availability:
            topic = availability_topic(self.friendly_name, self.z2m.base_topic)
            return MqttMessage(topic, b"online" if self.online else b"offline", retain=True)
        reading = Reading(AVAILABILITY, {"online": self.online}, source=self.friendly_name)
        return self.z2m.encode(reading, self.device)

    async def on_connect(self) -> None:
        """Zigbee2MQTT (re)publishes retained availability when it connects."""
        await self.deliver(self.availability_message())

    async def report(self) -> None:
        """Publish the whole state again (a periodic check-in of the device)."""
        await self.publish(self.state_message())

    async def _set(self, **values: Value) -> None:
        for name in values:
            if name not in self._reads:
                raise ValueError(f"profile {self.profile.name!r} does not report {name!r}")
        self.state.update(values)
        await self.report()

    # -- actions -------------------------------------------------------------------------

    async def open_door(self) -> None:
        """The door opens (contact false)."""
        await self._set(contact=False)

    async def close_door(self) -> None:
        """The door closes (contact true)."""
        await self._set(contact=True)

    async def motion(self, clear_after_s: float | None = None) -> None:
        """Motion detected; Zigbee2MQTT clears it after ``clear_after_s`` when given."""
        await self._set(occupancy=True)
        if clear_after_s is not None:
            await asyncio.sleep(clear_after_s)
            await self.clear_motion()

    async def clear_motion(self) -> None:
        """Occupancy cleared (Zigbee2MQTT's occupancy_timeout ran out)."""
        await self._set(occupancy=False)

    async def set_battery(self, percent: int) -> None:
        """Report a battery level; sets battery_low and voltage where the model has them."""
        if not 0 <= percent <= 100:
            raise ValueError(f"battery must be 0-100 %, got {percent}")
        values: dict[str, Value] = {"battery": percent}
        if "battery_low" in self._reads:
            values["battery_low"] = percent < LOW_BATTERY_PCT
        if "voltage" in self.extras:
            # CR2032/CR1632 cells: Zigbee2MQTT maps ~2850-3000 mV onto 0-100 %.
            self.extras["voltage"] = 2850 + round(percent * 1.5)
        await self._set(**values)

    async def drain_battery(self, to: int = 5, step: int | None = None) -> None:
        """Drain the battery to ``to`` %, publishing every ``step`` points on the way."""
        step = step or self.drain_step
        level = self.state.get("battery")
        if not isinstance(level, int):
            raise ValueError(f"profile {self.profile.name!r} does not report battery")
        while level > to:
            level = max(to, level - step)
            await self.set_battery(level)

    async def tamper(self, on: bool = True) -> None:
        """The cover is opened (``on``) or closed again."""
        await self._set(tamper=on)

    async def go_offline(self) -> None:
        """Zigbee2MQTT marks the device offline (retained)."""
        self.online = False
        await self.publish(self.availability_message())

    async def go_online(self) -> None:
        """Zigbee2MQTT sees the device again (retained)."""
        self.online = True
        await self.publish(self.availability_message())

    # -- faults --------------------------------------------------------------------------

    @property
    def faults(self) -> frozenset[str]:
        """Every fault this simulator can inject (adds ``battery_drain``)."""
        return super().faults | {"battery_drain"}

    async def inject(self, fault: MqttFault) -> None:
        """Apply one fault; see the module docstring."""
        if fault == "battery_drain":
            level = self.state.get("battery")
            if not isinstance(level, int):
                raise ValueError(f"profile {self.profile.name!r} does not report battery")
            await self.set_battery(max(0, level - self.drain_step))
            return
        await super().inject(fault)

    def fault_message(self, fault: str) -> MqttMessage:
        """Malformed state messages on the device's state topic."""
        good = self.state_message()
        if fault == "garbage":
            payload = b"\x00\xff\xfe<not json>" + bytes(range(7))
        elif fault == "truncated":
            payload = good.payload[: max(1, len(good.payload) // 2)]
        elif fault == "wrong_type":
            bad: dict[str, Any] = msgspec.json.decode(good.payload)
            primary = next(k for k, v in self.z2m.paths.items() if v == self.z2m.primary)
            bad[primary] = str(bad[primary]).lower()
            if "battery" in bad:
                bad["battery"] = str(bad["battery"])
            payload = msgspec.json.encode(bad)
        else:
            return super().fault_message(fault)
        return MqttMessage(good.topic, payload, good.retain)
