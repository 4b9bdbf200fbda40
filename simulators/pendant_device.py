"""What one alarm pendant does, independent of how its messages travel.

:class:`PendantDevice` keeps a pendant's own state (message counter, battery, movement
count, latched alarm, window ids) and turns actions into the decoded-form readings its
codec encodes: the serial RF simulator (:mod:`simulators.pendant_serial`) puts them in
CWRF/1 frames, the LoRaWAN simulator (:mod:`simulators.pendant_lorawan`) in ChirpStack
uplinks. Impact windows come from the same on-device trigger the fall evaluation uses
(:mod:`device_profiles.pendant_trigger`), so a simulated pendant uploads exactly what a
real one with that firmware would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from device_profiles.codecs.base import Reading
from device_profiles.codecs.pendant_payload import PendantCodecBase
from device_profiles.events import Value
from device_profiles.pendant_trigger import ImpactTrigger, ImpactWindow, resample

__all__ = ["LOW_BATTERY_PCT", "PendantDevice"]

#: Below this charge a pendant sends a low-battery report with its status.
LOW_BATTERY_PCT = 20


class PendantDevice:
    """One pendant: ``address`` is its id (hex RF id or DevEUI) as ``Reading.source``.

    Every method returns the readings (already numbered with the message counter) the
    pendant transmits for that action, in order.
    """

    def __init__(
        self,
        codec: PendantCodecBase,
        address: str,
        *,
        battery: int = 100,
        counter: int = 0,
        extras: Mapping[str, Value] | None = None,
    ):
        self.codec = codec
        self.address = address
        self.battery = battery
        self.activity = 0
        self.latched = False
        self.counter = counter % codec.counter_modulus
        self.window_id = 0
        self.suppressed = 0  # windows the trigger's posture filter did not upload
        self.extras: dict[str, Value] = {"temperature": 31, **(extras or {})}
        self._booted = False

    @property
    def latching(self) -> bool:
        """True for models that report the button as a latched ``sos`` flag."""
        return self.codec.layout.button == "latched"

    def _reading(self, name: str, values: Mapping[str, Value], urgent: bool = False) -> Reading:
        counter = self.counter
        self.counter = (self.counter + 1) % self.codec.counter_modulus
        return Reading(name, {**values, "counter": counter}, urgent=urgent, source=self.address)

    def power_cycle(self) -> None:
        """The pendant restarts: counters start again; the next status carries ``boot``."""
        self.counter = 0
        self.latched = False
        self._booted = False

    def status(self, battery: int | None = None, activity: int | None = None) -> Reading:
        """A status message (heartbeat); the first one after power-on carries ``boot``."""
        if battery is not None:
            self.battery = battery
        if activity is not None:
            self.activity = activity
        values: dict[str, Value] = {}
        for f in self.codec.layout.messages["status"].fields:
            name = f.resource
            if name == "battery":
                values[name] = self.battery
            elif name == "activity":
                values[name] = self.activity
            elif name == "sos":
                values[name] = self.latched
            elif name == "boot":
                values[name] = not self._booted
            elif name in self.extras:
                values[name] = self.extras[name]
            elif f.bit is not None:
                values[name] = False
            else:
                res = self.codec.profile.resource(name)
                values[name] = int(res.min) if res.min is not None and res.min > 0 else 0
        self._booted = True
        return self._reading("status", values, urgent=self.latched)

    def press(self) -> list[Reading]:
        """The button: a ``press`` message, or the latched flag in a status message."""
        if self.latching:
            self.latched = True
            return [self.status()]
        labels = [
            label
            for f in self.codec.layout.messages["press"].fields
            if f.resource == "button" and f.mapping
            for label in f.mapping.values()
        ]
        label = "sos" if "sos" in labels or not labels else labels[0]
        return [self._reading("press", {"button": label}, urgent=True)]

    def release(self) -> list[Reading]:
        """A carer resets a latched alarm (status with ``sos`` cleared); no-op otherwise."""
        if not self.latching or not self.latched:
            return []
        self.latched = False
        return [self.status()]

    def low_battery(self) -> list[Reading]:
        """A low-battery report, when the model has that message."""
        if "battery" not in self.codec.layout.messages:
            return []
        return [self._reading("battery", {"battery": self.battery})]

    def drain(self, step: int = 25) -> list[Reading]:
        """Battery down by ``step`` points: a status, plus a low-battery report when low."""
        self.battery = max(0, self.battery - step)
        out = [self.status()]
        if self.battery <= LOW_BATTERY_PCT:
            out += self.low_battery()
        return out

    def windows(self, trace: Sequence[Sequence[float]], rate_hz: float) -> list[ImpactWindow]:
        """Run the on-device trigger over ``trace`` (x, y, z in g at ``rate_hz``).

        The profile's trigger decides, posture filter (``min_turn_deg``) included; the
        windows it keeps back are added to :attr:`suppressed`.
        """
        cfg = self.codec.layout.trigger
        samples = [(float(s[0]), float(s[1]), float(s[2])) for s in trace]
        if rate_hz != cfg.rate_hz:
            samples = resample(samples, rate_hz, cfg.rate_hz)
        trigger = ImpactTrigger(cfg)
        out = trigger.feed(samples) + trigger.flush()
        self.suppressed += trigger.suppressed
        return out

    def upload(self, window: ImpactWindow) -> list[Reading]:
        """The fragments of one window, numbered with consecutive message counters.

        Raw or packed as the profile's ``impact.encoding`` says, cut by the codec.
        """
        wid = self.window_id
        self.window_id = (self.window_id + 1) % 256
        frags = self.codec.impact_fragments(
            wid,
            window.x,
            window.y,
            window.z,
            trigger_index=window.trigger_index,
            peak_g=window.peak_g,
        )
        return [self._reading("impact_fragment", v, urgent=True) for v in frags]

    def impact(
        self, trace: Sequence[Sequence[float]], rate_hz: float
    ) -> tuple[list[ImpactWindow], list[list[Reading]]]:
        """Every window the trigger uploads for ``trace``, with its fragment readings."""
        windows = self.windows(trace, rate_hz)
        return windows, [self.upload(w) for w in windows]


def describe(device: PendantDevice) -> dict[str, Any]:
    """The pendant's state, for logs and the command line."""
    return {
        "address": device.address,
        "battery": device.battery,
        "activity": device.activity,
        "latched": device.latched,
        "counter": device.counter,
        "suppressed_windows": device.suppressed,
    }
