"""An alarm pendant over LoRaWAN, as ChirpStack v4 publishes its uplinks, on a real broker.

:class:`PendantLoRaWanSimulator` plays the network server's MQTT integration for one
LoRaWAN pendant: every message the pendant sends becomes an ``event/up`` JSON document on
``application/<applicationId>/device/<devEui>/event/up`` with base64 ``data`` (one CWPL/1
message), an increasing ``fCnt``, ``deviceInfo``, ``rxInfo`` and ``time``, built by the
profile's ``chirpstack_pendant`` codec. Impact windows go up in the profile's
``impact.encoding``: ``impact_packed`` fragments for ``oem-lorawan-pendant``, cut by the
codec to as many samples as fit ``impact.max_fragment_bytes``::

    async with PendantLoRaWanSimulator(profile, "pendant-12", dev_eui="0101010101010101",
                                       host=broker.host, port=broker.port) as sim:
        await sim.press()
        await sim.heartbeat(battery=80, activity=4)
        await sim.impact(trace, rate_hz=200)         # on-device trigger -> fragment uplinks
        await sim.inject("duplicate")

Faults: those of :class:`~simulators.mqtt_device.MqttDeviceSimulator` (``duplicate``: the
same uplink published again, same fCnt; ``out_of_order``: the next uplink held back
behind the one after it; ``disconnect``; ``silence``), plus ``garbage`` (bytes that are
not JSON), ``truncated`` (an uplink document cut in half), ``wrong_type`` (``fCnt`` as a
string, ``data`` as a number) and ``battery_drain``. There is no ``bad_checksum``: the
network server drops uplinks whose MIC fails, so the application never sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from device_profiles.codecs.base import MqttMessage, Reading
from device_profiles.codecs.chirpstack import ChirpStackPendantCodec
from device_profiles.errors import ProfileError
from device_profiles.pendant_trigger import ImpactWindow
from device_profiles.profiles import Profile
from simulators.mqtt_device import MqttDeviceSimulator, MqttFault
from simulators.pendant_device import PendantDevice

__all__ = ["PendantLoRaWanSimulator"]

DEFAULT_APPLICATION = "17c82e96-be03-4f38-aef3-f83d48582d97"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PendantLoRaWanSimulator(MqttDeviceSimulator):
    """One LoRaWAN pendant behind ChirpStack v4's MQTT integration.

    ``dev_eui`` (16 hex digits) addresses it, ``application_id`` is the ChirpStack
    application (a topic level: tests use a unique one), ``device_name`` its name in
    ChirpStack (default: ``device``), ``fcnt`` the first frame counter, ``rssi``/``snr``
    the radio figures reported, ``clock`` the ms UTC time put in ``time``. Other keyword
    arguments go to :class:`~simulators.mqtt_device.MqttDeviceSimulator`.
    """

    payload_faults = frozenset({"garbage", "truncated", "wrong_type"})
    actions = MqttDeviceSimulator.actions | {
        "power_on",
        "press",
        "release",
        "heartbeat",
        "low_battery",
        "impact",
    }

    def __init__(
        self,
        profile: Profile,
        device: str,
        *,
        dev_eui: str = "0101010101010101",
        application_id: str = DEFAULT_APPLICATION,
        device_name: str | None = None,
        fcnt: int = 0,
        rssi: int = -80,
        snr: float = 7.5,
        drain_step: int = 25,
        clock: Callable[[], int] = _now_ms,
        **kwargs: Any,
    ):
        super().__init__(profile, device, **kwargs)
        if not isinstance(self.codec, ChirpStackPendantCodec):
            raise ProfileError(
                f"profile {profile.name!r} is not read by the chirpstack_pendant codec",
                file=profile.source,
                path="codec",
            )
        self.lora_codec: ChirpStackPendantCodec = self.codec
        self.dev_eui = dev_eui.lower()
        self.application_id = application_id
        self.device_name = device_name or device
        self.rssi = rssi
        self.snr = snr
        self.drain_step = drain_step
        self.clock = clock
        self.pendant = PendantDevice(self.lora_codec, self.dev_eui, counter=fcnt)
        # Validate the addressing once, so a bad DevEUI fails here and not mid-script.
        self.uplink(Reading("battery", {"battery": 100, "counter": 0}))

    @property
    def topic(self) -> str:
        """The ``event/up`` topic this pendant's uplinks go to."""
        return f"application/{self.application_id}/device/{self.dev_eui}/event/up"

    def uplink(self, reading: Reading) -> MqttMessage:
        """The ChirpStack uplink event for one decoded-form reading."""
        stamped = Reading(
            reading.reading, reading.values, self.clock(), reading.urgent, self.dev_eui
        )
        return self.lora_codec.uplink(
            stamped,
            dev_eui=self.dev_eui,
            device_name=self.device_name,
            application_id=self.application_id,
            rssi=self.rssi,
            snr=self.snr,
        )

    async def _send_readings(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            await self.publish(self.uplink(r))

    # -- actions -------------------------------------------------------------------------

    async def power_on(self) -> None:
        """The pendant restarts (fCnt from 0, as after a rejoin) and sends its status."""
        self.pendant.power_cycle()
        await self._send_readings([self.pendant.status()])

    async def press(self) -> None:
        """Press the alarm button."""
        await self._send_readings(self.pendant.press())

    async def release(self) -> None:
        """Reset a latched alarm (latched models only)."""
        await self._send_readings(self.pendant.release())

    async def heartbeat(self, battery: int | None = None, activity: int | None = None) -> None:
        """A status uplink."""
        await self._send_readings([self.pendant.status(battery, activity)])

    async def low_battery(self) -> None:
        """A low-battery report."""
        await self._send_readings(self.pendant.low_battery())

    async def impact(
        self,
        trace: Sequence[Sequence[float]],
        rate_hz: float,
        drop_fragments: Iterable[int] = (),
    ) -> list[ImpactWindow]:
        """Run the on-device trigger over ``trace``; every window goes up as fragments.

        ``drop_fragments`` are fragment indices lost on the air (packed fragments hold
        varying numbers of samples: the gateway counts what was lost). Returns the windows.
        """
        windows, uploads = self.pendant.impact(trace, rate_hz)
        lost = set(drop_fragments)
        for frags in uploads:
            sent = [r for r in frags if r.values.get("index") not in lost]
            self.dropped += len(frags) - len(sent)
            await self._send_readings(sent)
        return windows

    # -- faults --------------------------------------------------------------------------

    @property
    def faults(self) -> frozenset[str]:
        """Every fault this simulator can inject."""
        return super().faults | {"battery_drain"}

    async def inject(self, fault: MqttFault) -> None:
        """Apply one fault (see the module docstring)."""
        if fault == "battery_drain":
            await self._send_readings(self.pendant.drain(self.drain_step))
            return
        await super().inject(fault)

    def fault_message(self, fault: str) -> MqttMessage:
        """The malformed uplink of a payload fault."""
        if fault == "garbage":
            return MqttMessage(self.topic, b"\x00\xff{not json \x13\x37")
        good = self.uplink(self.pendant.status())
        if fault == "truncated":
            return MqttMessage(good.topic, good.payload[: len(good.payload) // 2])
        if fault == "wrong_type":
            status = self.pendant.status()
            stamped = Reading(status.reading, status.values, self.clock(), False, self.dev_eui)
            return self.lora_codec.uplink(
                stamped,
                dev_eui=self.dev_eui,
                device_name=self.device_name,
                application_id=self.application_id,
                extra={"fCnt": str(status.values["counter"]), "data": 12345},
            )
        return super().fault_message(fault)
