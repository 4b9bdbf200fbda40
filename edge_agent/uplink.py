"""The uplink: the ONE place that talks to the central MQTT broker.

- Connects with a last will: ``offline`` retained on ``.../{site}/{gateway}/status``
  (the broker publishes it when the gateway vanishes) and publishes ``online`` retained
  right after each connect; a clean shutdown publishes ``offline`` itself.
- Sends queued Events in batches on ``.../events`` with QoS 1 (payload: an
  ``EventBatch``, see :func:`device_profiles.events.encode_batch`). A batch is deleted
  from the disk queue only after its PUBACK. Several batches may be in flight
  (``queue.inflight``) so a backlog drains at broker speed, not at round-trip speed.
- Urgent events (alarm presses, fall windows) go at once in their own batches, ahead of
  everything else; other events wait up to ``queue.linger`` for a batch to fill
  (``queue.batch_size`` / ``queue.batch_max_bytes``).
- On any connection loss every unacknowledged batch is sent again after the reconnect
  (same seqs: the processor drops duplicates). Reconnect backoff starts at 0.1 s and is
  capped at 1 s with jitter, so the gateway is back within about a second of the broker.
- Publishes the heartbeat on ``.../health`` every ``health.heartbeat_interval`` (and
  when :meth:`Uplink.poke_health` asks, e.g. when a device goes down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import msgspec

from device_profiles.topics import events_topic, health_topic, status_topic
from edge_agent.config import AgentConfig, BrokerConfig
from edge_agent.queue import Batch, EventQueue

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 1.0
PUBLISH_TIMEOUT_S = 30.0

HealthSource = Callable[[], Awaitable[dict[str, Any]]]


def client_kwargs(broker: BrokerConfig) -> dict[str, Any]:
    """aiomqtt.Client keyword arguments for a configured broker (TLS, credentials)."""
    kwargs: dict[str, Any] = {
        "hostname": broker.host,
        "port": broker.port,
        "username": broker.username,
        "password": broker.password,
        "identifier": broker.client_id,
        "keepalive": broker.keepalive_s,
        "timeout": 10.0,
    }
    if broker.tls is not None:
        kwargs["tls_params"] = aiomqtt.TLSParameters(
            ca_certs=broker.tls.ca_file,
            certfile=broker.tls.cert_file,
            keyfile=broker.tls.key_file,
            cert_reqs=ssl.CERT_NONE if broker.tls.insecure else ssl.CERT_REQUIRED,
        )
        if broker.tls.insecure:
            kwargs["tls_insecure"] = True
    return kwargs


def backoff_delays(first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S) -> Any:
    """Reconnect delays: doubling from ``first``, capped, with jitter in [d/2, d]."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)


@dataclass
class UplinkStats:
    """What the uplink did, for the heartbeat and the benchmarks."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    last_error: str | None = None
    connected_since: float | None = None  # time.monotonic()
    connected_at_wall: list[float] = field(default_factory=list)  # time.time() per connect


class Uplink:
    """Publishes the queue to the central broker; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        queue: EventQueue,
        health: HealthSource | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.health = health
        self.stats = UplinkStats()
        root = config.topic_root
        self.events_topic = events_topic(config.site, config.gateway, root)
        self.status_topic = status_topic(config.site, config.gateway, root)
        self.health_topic = health_topic(config.site, config.gateway, root)
        self._stopping = asyncio.Event()
        self._health_now = asyncio.Event()
        self._idle = asyncio.Event()  # set when nothing is in flight
        self._idle.set()
        self._inflight = 0

    # -- public ---------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, send, reconnect; returns after :meth:`stop`."""
        delays = backoff_delays()
        while not self._stopping.is_set():
            connects = self.stats.connects
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                self._lost("; ".join(str(e) for e in group.exceptions))
            except* Exception as group:  # a bug or a disk error: report, retry
                log.error("uplink: session failed", exc_info=group)
                self._lost(f"internal error: {group.exceptions[0]!r}")
            if self._stopping.is_set():
                break
            if self.stats.connects != connects:
                delays = backoff_delays()  # a session that connected resets the backoff
            delay = next(delays)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def poke_health(self) -> None:
        """Publish a heartbeat as soon as possible (a device went down or came back)."""
        self._health_now.set()

    async def stop(self) -> None:
        """Stop sending new batches; the session waits for in-flight PUBACKs and closes."""
        self._stopping.set()
        self.queue.changed.set()  # wake the send loop

    # -- one connection ---------------------------------------------------------------
    def _lost(self, reason: str) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            log.warning("uplink: connection to %s lost: %s", self.config.broker.url, reason)
        elif reason != self.stats.last_error:
            log.warning("uplink: cannot connect to %s: %s", self.config.broker.url, reason)
        self.stats.connected = False
        self.stats.connected_since = None
        self.stats.last_error = reason

    async def _session(self) -> None:
        will = aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True)
        kwargs = client_kwargs(self.config.broker)
        inflight_limit = self.config.queue.inflight
        async with aiomqtt.Client(
            **kwargs,
            will=will,
            clean_session=True,
            max_inflight_messages=inflight_limit + 4,
        ) as client:
            self.stats.connected = True
            self.stats.connects += 1
            self.stats.connected_since = time.monotonic()
            self.stats.connected_at_wall.append(time.time())
            del self.stats.connected_at_wall[:-20]
            self.stats.last_error = None
            log.info("uplink: connected to %s", self.config.broker.url)
            await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self._watch(client), name="uplink-watch")
                beat = tg.create_task(self._heartbeat(client), name="uplink-health")
                await self._send_loop(client, tg)
                # stopping: the send loop waited for in-flight batches; say goodbye
                beat.cancel()
                watcher.cancel()
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._publish_health(client)
                await client.publish(self.status_topic, OFFLINE, qos=1, retain=True, timeout=2)
        self.stats.connected = False
        self.stats.connected_since = None

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection drops (nothing is subscribed)."""
        async for _ in client.messages:
            pass

    async def _send_loop(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        q = self.config.queue
        window = asyncio.Semaphore(q.inflight)
        marks = {True: 0, False: 0}  # highest seq taken per class on THIS connection
        while not self._stopping.is_set():
            await window.acquire()
            if self._stopping.is_set():
                window.release()
                break
            batch = await self._next_batch(marks)
            if batch is None:
                window.release()
                break
            marks[batch.urgent] = batch.last
            self._inflight += 1
            self._idle.clear()
            tg.create_task(self._publish(client, batch, window))
        await self._idle.wait()

    async def _next_batch(self, marks: dict[bool, int]) -> Batch | None:
        """The next batch to send, waiting for data or linger; None when stopping.

        Urgent batches go at once. Others go at once when nothing is in flight (no
        added latency at low rates); while batches await their PUBACK, a batch waits up
        to ``linger`` to fill, so a busy gateway sends few, large batches.
        """
        q = self.config.queue
        linger_deadline: float | None = None
        while not self._stopping.is_set():
            self.queue.changed.clear()
            batch = await self.queue.peek_next(
                after_urgent=marks[True],
                after=marks[False],
                limit=q.batch_size,
                max_bytes=q.batch_max_bytes,
            )
            now = time.monotonic()
            if batch is not None:
                if batch.urgent or self._inflight == 0:
                    return batch
                full = len(batch) >= q.batch_size or len(batch.payload) * 1.1 >= q.batch_max_bytes
                if linger_deadline is None:
                    linger_deadline = now + q.linger_s
                if full or now >= linger_deadline:
                    return batch
                wait_s: float | None = linger_deadline - now
            else:
                wait_s = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.changed.wait(), timeout=wait_s)
        return None

    async def _publish(
        self, client: aiomqtt.Client, batch: Batch, window: asyncio.Semaphore
    ) -> None:
        try:
            await client.publish(self.events_topic, batch.payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
            await self.queue.ack(batch.seqs)  # only after the PUBACK
            self.stats.batches_sent += 1
            self.stats.events_sent += len(batch)
        finally:
            window.release()
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
                self.queue.changed.set()  # a lingering batch may go now

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        interval = self.config.health.heartbeat_interval_s
        while True:
            # Cleared before the snapshot, not after the publish: a poke (a source up, a
            # device down) arriving while this heartbeat is built or sent must bring
            # another one, or the change would wait a whole interval to be reported.
            self._health_now.clear()
            await self._publish_health(client)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_now.wait(), timeout=interval)

    async def _publish_health(self, client: aiomqtt.Client) -> None:
        if self.health is None:
            return
        try:
            snapshot = await self.health()
        except Exception:
            log.exception("uplink: building the heartbeat failed")
            return
        await client.publish(self.health_topic, msgspec.json.encode(snapshot), qos=1)
