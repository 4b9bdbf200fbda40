"""Shared base of simulated devices that publish to an MQTT broker (aiomqtt).

A subclass encodes what it publishes with its profile's codec and only adds its own
actions (``open_door()``, ``checkin()``...) and its fault payloads. This base owns the
broker connection and the faults every MQTT device can show:

``duplicate``
    the last message is published again (at-least-once delivery does this);
``out_of_order``
    the next message is held back and published after the one that follows it;
``disconnect``
    the connection to the broker is dropped and, after ``outage_s``, opened again;
    messages published meanwhile wait and go out after the reconnect, as a real
    client's offline queue sends them;
``silence``
    the device stops publishing (messages are dropped and counted) until
    :meth:`MqttDeviceSimulator.resume`;
``garbage``, ``truncated``, ``wrong_type`` (and subclass extras)
    a malformed payload from :meth:`MqttDeviceSimulator.fault_message`.

The connection also survives a broker that goes away: a publish that finds the
connection lost reconnects (retrying for up to ``reconnect_timeout_s``) and sends again.

Scripts run actions at offsets from their start, optionally sped up::

    await sim.play([(0, "open_door"), (30, "close_door"), (31, "inject", {"fault": "garbage"})],
                   time_scale=60)

Ground truth for tests: :attr:`history` lists every message that reached the broker, in
publication order; :attr:`dropped` counts messages swallowed by ``silence``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import ClassVar, Literal

import aiomqtt

from device_profiles.codecs.base import MqttMessage
from device_profiles.profiles import Profile
from simulators.base import Fault, Simulator

log = logging.getLogger(__name__)

#: Faults of MQTT devices beyond the shared list.
MqttFault = Fault | Literal["wrong_type", "bad_time"]

#: A script step: (seconds from the start, action name) or (seconds, action, kwargs).

_BASE_FAULTS: frozenset[str] = frozenset({"duplicate", "out_of_order", "disconnect", "silence"})


class MqttDeviceSimulator(Simulator):
    """One device on an MQTT broker.

    Subclasses call :meth:`publish` with messages their codec encoded, override
    :meth:`fault_message` for payload faults, may override :meth:`on_connect` (called
    after every (re)connect, e.g. to publish retained availability), and list their
    scriptable actions in :attr:`actions`.
    """

    #: Payload faults this device can produce through :meth:`fault_message`.
    payload_faults: frozenset[str] = frozenset()
    #: Method names :meth:`play` may call.
    actions: ClassVar[frozenset[str]] = frozenset({"inject", "resume", "drop_connection"})

    def __init__(
        self,
        profile: Profile,
        device: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        qos: int = 1,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        outage_s: float = 0.2,
        reconnect_timeout_s: float = 30.0,
    ):
        super().__init__(profile, device)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        self.host = host
        self.port = port
        self.qos = qos
        self.client_id = client_id or f"sim-{device}-{uuid.uuid4().hex[:8]}"
        self._auth = (username, password)
        self.outage_s = outage_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.history: list[MqttMessage] = []
        self.dropped = 0
        self.silent = False
        self.reconnects = 0
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._stopped = True
        self._hold_next = False
        self._held: MqttMessage | None = None
        self._send_lock = asyncio.Lock()

    # -- connection ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the simulator holds an open broker connection."""
        return self._client is not None

    async def start(self) -> None:
        """Connect to the broker; returns once connected (and :meth:`on_connect` ran)."""
        if not self._stopped:
            return
        self._stopped = False
        await self._connect()

    async def stop(self) -> None:
        """Publish a held-back message, if any, and disconnect. Safe to call twice."""
        if self._stopped:
            return
        held, self._held, self._hold_next = self._held, None, False
        if held is not None and self.connected:
            await self._send(held)
        self._stopped = True
        await self._disconnect()

    async def _connect(self) -> None:
        username, password = self._auth
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=username,
            password=password,
            timeout=10,
        )
        await client.__aenter__()
        self._client = client
        self._up.set()
        try:
            await self.on_connect()
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._up.clear()
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as exc:  # the connection was already gone
                log.debug("%s: disconnect: %s", self.device, exc)

    async def on_connect(self) -> None:
        """Hook run after every (re)connect; publishes nothing by default.

        Publish from here with :meth:`deliver`, not :meth:`publish`.
        """

    async def drop_connection(self, outage_s: float | None = None) -> None:
        """Drop the broker connection, stay away ``outage_s`` seconds, reconnect."""
        await self._disconnect()
        await asyncio.sleep(self.outage_s if outage_s is None else outage_s)
        if not self._stopped:
            self.reconnects += 1
            await self._connect()

    async def _reconnect(self) -> None:
        """Reconnect after a lost connection, retrying until ``reconnect_timeout_s``."""
        await self._disconnect()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout_s
        delay = 0.05
        while True:
            try:
                await self._connect()
            except aiomqtt.MqttError as exc:
                if loop.time() + delay > deadline:
                    raise
                log.debug("%s: reconnect failed (%s), retrying", self.device, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            else:
                self.reconnects += 1
                return

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, message: MqttMessage) -> None:
        """Publish one message, honouring ``silence`` and ``out_of_order``."""
        if self.silent:
            self.dropped += 1
            return
        if self._hold_next:
            self._hold_next = False
            self._held = message
            return
        await self._send(message)
        held, self._held = self._held, None
        if held is not None:
            await self._send(held)

    async def _send(self, message: MqttMessage) -> None:
        async with self._send_lock:
            while True:
                if self._stopped:
                    raise RuntimeError(f"{self.device}: simulator is not started")
                # During a scripted outage, wait for the reconnect (the offline queue).
                await asyncio.wait_for(self._up.wait(), timeout=self.reconnect_timeout_s)
                if self._client is None:
                    continue
                try:
                    await self.deliver(message)
                except aiomqtt.MqttError as exc:
                    log.debug("%s: publish failed (%s); reconnecting", self.device, exc)
                    await self._reconnect()
                    continue
                return

    async def deliver(self, message: MqttMessage) -> None:
        """Publish on the current connection now: no faults, no queueing, no retry.

        For :meth:`on_connect` hooks (which run while a reconnect holds the send lock);
        raises aiomqtt.MqttError when the connection is down.
        """
        if self._client is None:
            raise aiomqtt.MqttError(f"{self.device}: not connected")
        await self._client.publish(
            message.topic, message.payload, qos=self.qos, retain=message.retain
        )
        self.sent += 1
        self.history.append(message)

    # -- faults --------------------------------------------------------------------------

    @property
    def faults(self) -> frozenset[str]:
        """Every fault this simulator can inject."""
        return _BASE_FAULTS | self.payload_faults

    def fault_message(self, fault: str) -> MqttMessage:
        """The malformed message for a payload fault; subclasses provide them."""
        raise ValueError(f"{type(self).__name__} does not simulate fault {fault!r}")

    async def inject(self, fault: MqttFault) -> None:
        """Apply one fault (see the module docstring). ValueError for unknown faults."""
        if fault not in self.faults:
            raise ValueError(
                f"{type(self).__name__} does not simulate fault {fault!r}; "
                f"it does {sorted(self.faults)}"
            )
        if fault == "duplicate":
            if not self.history:
                raise ValueError(f"{self.device}: nothing published yet to duplicate")
            await self.publish(self.history[-1])
        elif fault == "out_of_order":
            self._hold_next = True
        elif fault == "disconnect":
            await self.drop_connection()
        elif fault == "silence":
            self.silent = True
        else:
            await self.publish(self.fault_message(fault))

    async def resume(self) -> None:
        """End ``silence``: the device publishes again."""
        self.silent = False
