"""The ONE place the stream processor talks to the central broker.

- A persistent session: a stable client id (``mqtt.client_id``) and ``clean_session``
  False, so the broker keeps the subscriptions and queues QoS 1 messages while the
  processor is down or restarting, and redelivers what was not acknowledged.
- QoS 1 subscriptions to ``{root}/+/+/events``, ``{root}/+/+/status``,
  ``{root}/+/+/health`` and ``{root}/+/acks/+``.
- Manual acknowledgement: paho-mqtt's ``manual_ack`` is switched on and the PUBACK of a
  message is sent only after :meth:`Processor.handle_message` returned, i.e. after
  every effect of the message was committed to SQLite. A SIGKILL at any moment
  therefore loses nothing: an unacknowledged message is redelivered on the next
  connect and the dedup makes the redelivery harmless. Messages are handled one at a
  time, in arrival order, so PUBACKs also go out in order (MQTT 3.1.1, 4.6).
- If the state database fails (disk full...), the message is not acknowledged and the
  connection is dropped; the broker redelivers after the reconnect. The failures are
  counted and waited out like the other loops' (:class:`stream.retry.LoopRetry`, loop
  ``mqtt``): a database failing for 10 minutes stops the processor (non-zero exit).
- Publishing (the alert topic) goes through the same connection with QoS 1 and
  returns after the broker's PUBACK.
- Reconnects with a capped exponential backoff.

aiomqtt 2.x does not expose paho's manual acknowledgement; it is reached through the
client's underlying paho client (``Client._client``), pinned by the test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import ssl
from collections.abc import Callable, Sequence

import aiomqtt
import paho.mqtt.client as paho

from device_profiles.topics import subscription
from stream.config import MqttConfig
from stream.metrics import Metrics
from stream.notifiers.base import NotifyError
from stream.retry import LoopRetry

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
PUBLISH_TIMEOUT_S = 15.0

Handler = Callable[[str, bytes], object]


def subscriptions(root: str, sites: Sequence[str] = ("+",)) -> list[str]:
    """The topic filters the processor subscribes to (all sites, or the listed ones)."""
    return [
        subscription(channel, site=site, root=root)
        for site in sites
        for channel in ("events", "status", "health", "acks")
    ]


class MqttLink:
    """Persistent-session subscriber with manual acknowledgement, plus a publisher."""

    def __init__(
        self,
        config: MqttConfig,
        handler: Handler,
        on_state: Callable[[bool], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.on_state = on_state
        self.metrics = metrics
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.handled = 0

    def _make_client(self) -> aiomqtt.Client:
        tls_context = None
        if self.config.tls:
            tls_context = ssl.create_default_context(cafile=self.config.ca_file)
            if self.config.cert_file:
                tls_context.load_cert_chain(self.config.cert_file, self.config.key_file)
        client = aiomqtt.Client(
            self.config.host,
            self.config.port,
            username=self.config.username,
            password=self.config.password,
            identifier=self.config.client_id,
            clean_session=False,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=self.config.keepalive_s,
            tls_context=tls_context,
            timeout=10,
        )
        paho_client: paho.Client = client._client
        paho_client.manual_ack_set(True)
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and handle messages until ``stop`` is set, reconnecting as needed."""
        backoff = BACKOFF_FIRST_S
        retry = LoopRetry("mqtt", self.metrics, stop)
        while not stop.is_set():
            try:
                await self._session(stop, retry)
                backoff = BACKOFF_FIRST_S
            except aiomqtt.MqttError as exc:
                log.warning("central broker: %s; reconnecting in %.1f s", exc, backoff)
            except sqlite3.Error as exc:
                # Left unacknowledged: the broker redelivers it after the reconnect. The
                # retry waits (raising LoopGaveUp when this lasts too long); reconnect then.
                self._set_connected(False)
                log.error("state database failed; message left unacknowledged")
                await retry.failed(exc)
                continue
            finally:
                self._set_connected(False)
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.8, 1.2))
            backoff = min(self.config.reconnect_max_s, backoff * 2)

    async def _session(self, stop: asyncio.Event, retry: LoopRetry) -> None:
        async with self._make_client() as client:
            for topic_filter in subscriptions(self.config.root, self.config.sites):
                await client.subscribe(topic_filter, qos=1)
            self._client = client
            self._set_connected(True)
            log.info(
                "connected to %s:%s as %s (persistent session)",
                self.config.host,
                self.config.port,
                self.config.client_id,
            )
            receiver = asyncio.ensure_future(self._receive(client, retry))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {receiver, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiver in done:
                    receiver.result()  # re-raise what ended it
            finally:
                receiver.cancel()
                stopper.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await receiver
                self._client = None

    async def _receive(self, client: aiomqtt.Client, retry: LoopRetry) -> None:
        paho_client: paho.Client = client._client
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            # Effects are committed inside handler(); only then is the PUBACK sent.
            self.handler(message.topic.value, data)
            self.handled += 1
            retry.ok()  # a handled message: a failing database works again
            if message.qos > 0:
                paho_client.ack(message.mid, message.qos)

    def _set_connected(self, value: bool) -> None:
        if value:
            self.connected.set()
        else:
            self.connected.clear()
        if self.on_state is not None:
            self.on_state(value)

    async def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish with QoS 1; returns after PUBACK. Raises :class:`NotifyError` when
        not connected or the broker does not confirm."""
        client = self._client
        if client is None:
            raise NotifyError("not connected to the central broker")
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise NotifyError(f"publish to {topic}: {exc}") from exc
