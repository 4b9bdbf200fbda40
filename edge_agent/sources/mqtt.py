"""Devices behind a site-local MQTT broker: Zigbee2MQTT, face terminals, ChirpStack.

One :class:`MqttSource` per configured site broker. Each device's topics come from its
profile's transport (``base_topic`` for Zigbee2MQTT, a ``topic`` template for the
others, where ``{device}``/``{address}``/``{dev_eui}`` stand for the device's address
and any other ``{placeholder}`` becomes the ``+`` wildcard) or from ``mqtt.topics`` in
the site config. A message is routed by its exact topic, else by the filters; when a
filter serves several devices the codec's ``Reading.source`` picks the device.

Delivery: the source keeps a persistent session (fixed client id, clean_session off)
and acknowledges a QoS 1 message only after the Events it produced are on disk, so a
message the agent had not stored when it died is delivered again by the local broker.
A redelivery (DUP flag) of a message that *was* stored (the agent died, or the
connection was taken over, between the commit and the PUBACK) is recognized by its
digest of packet id and bytes, kept with the events in the same transaction (the
newest 4096), and skipped (counted as
``site_redeliveries_skipped``), so it does not become a second Event with a new seq. A
DUP message whose digest is not there was never stored and is handled normally, even
when its bytes equal an earlier message's (a door reporting the same state again: the
broker gave that new message another packet id).
A local broker restart ends the session with an error; the agent reconnects with
backoff and the other sources keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
from collections.abc import Sequence
from typing import Any, ClassVar

import aiomqtt

from device_profiles.codecs import MqttMessage, Reading
from device_profiles.errors import CarewatchError, DecodeError
from device_profiles.topics import matches
from edge_agent.config import BrokerConfig
from edge_agent.ingest import Bound, Ingest, SeenMessages, message_digest
from edge_agent.queue import AppendResult
from edge_agent.sources import Source, SourceError

log = logging.getLogger(__name__)

#: Stop reading the site broker's socket when this many messages wait to be handled...
READ_PAUSE_AT = 500
#: ... and read again when no more than this many are left.
READ_RESUME_AT = 50


class _Wildcards(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "+"


def device_topics(device: Bound) -> list[str]:
    """The topic filters a device publishes on (see the module docstring)."""
    t = device.config.transport
    address = device.config.address or device.id
    names = _Wildcards(device=address, address=address, dev_eui=address, devEui=address)
    explicit = t.get("topics")
    if explicit:
        return [string.Formatter().vformat(str(x), (), names) for x in explicit]
    if device.config.protocol == "zigbee2mqtt":
        base = str(t.get("base_topic", "zigbee2mqtt"))
        return [f"{base}/{address}", f"{base}/{address}/availability"]
    template = t.get("topic")
    if template:
        return [string.Formatter().vformat(str(template), (), names)]
    raise CarewatchError(
        f"{device.id}: profile {device.profile.name!r} names no topic; set mqtt.topics"
    )


class MqttSource(Source):
    """All devices on one site-local broker."""

    kind: ClassVar[str] = "mqtt"

    def __init__(
        self, broker_name: str, broker: BrokerConfig, devices: Sequence[Bound], ingest: Ingest
    ) -> None:
        super().__init__(f"mqtt:{broker_name}", devices, ingest)
        self.broker = broker
        self.exact: dict[str, list[Bound]] = {}
        self.filters: dict[str, list[Bound]] = {}
        self.qos: dict[str, int] = {}
        for d in self.devices:
            for topic in device_topics(d):
                qos = min(1, int(d.config.transport.get("qos", 1)))
                self.qos[topic] = max(self.qos.get(topic, 0), qos)
                if "+" in topic or "#" in topic:
                    self.filters.setdefault(topic, []).append(d)
                else:
                    self.exact.setdefault(topic, []).append(d)
        self.messages = 0
        self.unrouted = 0
        self.redeliveries = 0

    def route(self, topic: str) -> tuple[list[Bound], bool]:
        """Devices a message on ``topic`` may belong to, and whether the topic alone
        names the device (an exact topic of one device) or the codec's
        ``Reading.source`` must pick it (a wildcard filter such as ChirpStack's)."""
        found = self.exact.get(topic)
        if found:
            return found, len(found) == 1
        return [d for f, devs in self.filters.items() if matches(f, topic) for d in devs], False

    async def run(self) -> None:
        from edge_agent.uplink import client_kwargs

        client = aiomqtt.Client(**client_kwargs(self.broker), clean_session=False)
        # Acknowledge only once stored (see the module docstring). aiomqtt has no
        # switch for this, so it is set on its paho client before connecting.
        paho = client._client
        paho.manual_ack_set(True)
        # aiomqtt's Message drops the DUP flag: note it from paho's message first.
        dup_mids: set[int] = set()
        deliver = paho.on_message
        assert deliver is not None  # set by aiomqtt

        def on_message(c: Any, userdata: Any, m: Any) -> None:
            if m.dup and m.qos > 0:
                dup_mids.add(m.mid)
            deliver(c, userdata, m)

        paho.on_message = on_message
        seen = self.ingest.seen_messages
        async with client:
            # paho reads a packet a few bytes per recv() call: read 64 KiB at a time.
            paho._sock = _BufferedReads(paho._sock)
            for topic, qos in self.qos.items():
                await client.subscribe(topic, qos=qos)
            log.info("%s: subscribed to %d topics", self.name, len(self.qos))
            self.up()
            # aiomqtt's iterator costs a task per message; under load, take what is
            # already queued in one go (same order), which also feeds bigger commits.
            pending: asyncio.Queue[aiomqtt.Message] = client._queue
            gate = _ReadGate(client, pending)
            acks: list[tuple[int, int, int]] = []
            acks_for: asyncio.Future[AppendResult] | None = None
            failed: list[BaseException] = []
            try:
                async for first in _until_failed(client, failed):
                    await self.ingest.queue.wait_for_room()  # backpressure from the disk
                    message: aiomqtt.Message | None = first
                    n = 0
                    while message is not None:
                        topic = str(message.topic)
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        if message.qos == 0:
                            self.handle(topic, payload, message.retain)
                        else:
                            digest = message_digest(topic, payload, message.mid)
                            if message.mid in dup_mids:
                                dup_mids.discard(message.mid)
                                if digest in seen:  # stored before the PUBACK got lost
                                    self.redeliveries += 1
                                    self.ingest.queue.submit(
                                        [], counters={"site_redeliveries_skipped": 1}
                                    )
                                    paho.ack(message.mid, message.qos)
                                    message = _next(pending)
                                    continue
                            fut = self.handle(topic, payload, message.retain)
                            self.ingest.queue.submit([], seen=[digest])  # same commit
                            if fut is not acks_for:  # a new group commit: a new ack list
                                acks, acks_for = [], fut
                                fut.add_done_callback(_acker(paho, acks, seen, failed))
                            acks.append((message.mid, message.qos, digest))
                        n += 1
                        if n % 256 == 0:  # let the writer and the uplink run
                            gate.maybe_resume()
                            await self.ingest.queue.wait_for_room()
                            await asyncio.sleep(0)
                        message = _next(pending)
                    gate.maybe_resume()
            finally:
                # Stopping (reload, shutdown): acknowledge what is being stored before
                # disconnecting, or the site broker would deliver it again.
                if acks_for is not None:
                    if not acks_for.done():
                        await asyncio.wait([acks_for], timeout=5)
                    # Its done-callback may still be scheduled: ack now (it then finds
                    # nothing left to do), before the disconnect is queued.
                    if acks_for.done():
                        _acker(paho, acks, seen, failed)(acks_for)

    def handle(
        self, topic: str, payload: Any, retain: bool = False
    ) -> asyncio.Future[AppendResult]:
        """Decode and route one message; returns the future of its commit."""
        self.messages += 1
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        devices, by_topic = self.route(topic)
        if not devices:
            self.unrouted += 1
            return self.ingest.fault(self.name, "unknown_topic", f"no device for {topic!r}", data)
        first = devices[0]
        msg = MqttMessage(topic, data, retain)
        try:
            readings = first.codec.decode(msg, first.id)
        except DecodeError as exc:
            return self.ingest.fault(first.id, exc.fault, exc.detail, data)
        except CarewatchError as exc:
            return self.ingest.fault(first.id, "decode", str(exc), data)
        except Exception as exc:  # a codec bug: counted and set aside, never a dead source
            log.exception("%s: codec failed on a message from %s", first.id, topic)
            return self.ingest.fault(first.id, "codec_bug", repr(exc), data)
        if by_topic:
            return self.ingest.readings(first, readings)
        routed: dict[str, tuple[Bound, list[Reading]]] = {}
        for r in readings:
            device = _by_source(devices, r.source)
            if device is None:
                self.unrouted += 1
                self.ingest.fault(
                    self.name,
                    "unknown_device",
                    f"{topic}: source {r.source!r} not configured",
                    data,
                )
                continue
            routed.setdefault(device.id, (device, []))[1].append(r)
        futures = [self.ingest.readings(d, rs) for d, rs in routed.values()]
        if not futures:
            return self.ingest.queue.submit([])
        return futures[-1]  # commits are ordered: the last one covers the others


def _by_source(devices: Sequence[Bound], source: str | None) -> Bound | None:
    """The device whose address is ``source`` (DevEUIs compare case-insensitively)."""
    if source is None:
        return None
    folded = source.lower()
    for d in devices:
        address = d.config.address or d.id
        if address == source or address.lower() == folded:
            return d
    return None


def _next(pending: asyncio.Queue[aiomqtt.Message]) -> aiomqtt.Message | None:
    try:
        return pending.get_nowait()
    except asyncio.QueueEmpty:
        return None


async def _until_failed(client: aiomqtt.Client, failed: list[BaseException]) -> Any:
    """``client.messages``, ending in :class:`SourceError` once a commit failed."""
    try:
        async for message in client.messages:
            if failed:
                break
            yield message
    except aiomqtt.MqttError as exc:
        if not failed:
            raise
        raise SourceError(f"commit failed: {failed[0]}") from exc
    if failed:
        raise SourceError(f"commit failed: {failed[0]}")


def _acker(
    paho: Any,
    acks: list[tuple[int, int, int]],
    seen: SeenMessages,
    failed: list[BaseException] | None = None,
) -> Any:
    """A done-callback acknowledging ``acks`` once their commit succeeded (once).

    The digests stay in ``seen`` (and on disk, capped) after the PUBACK: a PUBACK
    handed to paho may still never reach the broker (a reload or takeover closes the
    connection first), and only a digest of packet id and bytes is kept, so a new
    message with the same bytes, which gets another packet id, is not mistaken for it.
    When the commit failed nothing is acknowledged and the connection is dropped
    (noted in ``failed``): the source reconnects and the site broker delivers the
    messages again, instead of its in-flight window filling up with messages this
    session will never acknowledge.
    """

    def ack(fut: asyncio.Future[AppendResult]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # not stored: let the broker deliver them again
            if failed is not None and not failed:
                failed.append(exc)
                with contextlib.suppress(Exception):
                    paho.disconnect()  # ends the message loop; the session is kept
            return
        done = list(acks)
        acks.clear()
        for _, _, digest in done:
            seen.add(digest)
        for mid, qos, _ in done:
            try:
                paho.ack(mid, qos)
            except Exception:  # connection gone: the broker redelivers
                log.debug("ack of message %d failed", mid)
                return

    return ack


class _ReadGate:
    """Stops reading the site broker's socket while many messages wait to be handled.

    A site broker flushing a backlog (the agent was away) sends as fast as TCP allows;
    paho would read it all into memory. Above :data:`READ_PAUSE_AT` waiting messages the
    socket is no longer read, so TCP pushes back and the broker keeps the rest (QoS 1
    messages stay unacknowledged there until stored here); reading resumes below
    :data:`READ_RESUME_AT`. aiomqtt's own reader is replaced by an equivalent one that
    can be paused.
    """

    def __init__(self, client: aiomqtt.Client, pending: asyncio.Queue[aiomqtt.Message]) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.paho = client._client
        self.pending = pending
        sock = self.paho.socket()
        if sock is None:
            raise SourceError("connected client without a socket")
        self.fd = sock.fileno()
        self.paused = False
        self.pauses = 0
        self.loop.remove_reader(self.fd)
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        # What aiomqtt's reader does (read every decoded packet, report a broken link),
        # but it stops once enough messages wait: the proxy refills from the socket as
        # long as the kernel has data, so "read everything" could mean the whole backlog.
        try:
            while True:
                self.paho.loop_read()
                if self.pending.qsize() >= READ_PAUSE_AT:
                    self._pause()
                    return
                if self._buffered() == 0:
                    return
        except Exception as exc:
            disconnected = self.client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def _buffered(self) -> int:
        sock = self.paho._sock
        if sock is not None and hasattr(sock, "pending"):
            return int(sock.pending())
        return 0

    def _pause(self) -> None:
        if not self.paused:
            if self.paho._sock is not None:
                self.loop.remove_reader(self.fd)
            self.paused = True
            self.pauses += 1

    def maybe_resume(self) -> None:
        """Read again once the waiting messages are few (called by the handler)."""
        if self.paused and self.pending.qsize() <= READ_RESUME_AT:
            self.paused = False
            if self.paho._sock is not None:
                self.loop.add_reader(self.fd, self._readable)
                if self._buffered():  # already read from the socket: epoll will not tell
                    self.loop.call_soon(self._readable)


class _BufferedReads:
    """paho's socket, read 64 KiB at a time.

    paho asks for each packet's header and length bytes separately, one ``recv`` system
    call each; at thousands of messages per second that is most of the cost. This proxy
    serves those small reads from one large read and reports what it holds through
    ``pending()`` (the hook paho and aiomqtt already use for TLS sockets), so the reader
    keeps going until the buffer is empty.
    """

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(65536)  # BlockingIOError / SSL errors propagate
            if not data:
                return b""  # EOF: paho sees the connection close
            self._buf, self._pos = data, 0
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
