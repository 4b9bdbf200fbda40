"""Helpers for simulator tests on the real broker: subscribe, collect, decode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt

from device_profiles.codecs import Codec, MqttMessage, Reading
from device_profiles.errors import DecodeError

# Generous: a message on loopback takes milliseconds; this only bounds a hung test.
WAIT_S = 15.0


@asynccontextmanager
async def subscriber(host: str, port: int, topic: str) -> AsyncIterator[aiomqtt.Client]:
    """A client subscribed (QoS 1) to ``topic`` before the test publishes anything."""
    async with aiomqtt.Client(host, port, identifier=None) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def collect(client: aiomqtt.Client, n: int, wait_s: float = WAIT_S) -> list[MqttMessage]:
    """The next ``n`` messages ``client`` receives, as codec input."""
    out: list[MqttMessage] = []
    async with asyncio.timeout(wait_s):
        async for m in client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            out.append(MqttMessage(str(m.topic), payload, m.retain))
            if len(out) >= n:
                break
    return out


def decode_all(codec: Codec, messages: list[MqttMessage], device: str) -> list[Reading | str]:
    """Each message decoded: its single reading, or ``"fault:<name>"`` for garbage."""
    out: list[Reading | str] = []
    for msg in messages:
        try:
            readings = codec.decode(msg, device)
        except DecodeError as exc:
            assert exc.device == device
            out.append(f"fault:{exc.fault}")
            continue
        assert len(readings) == 1, readings
        out.append(readings[0])
    return out
