"""The test harness itself: real brokers and databases start, answer and keep state."""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest

from tests.harness import (
    InfluxDBService,
    MosquittoService,
    ServiceError,
    WaitTimeout,
    async_wait_for,
    free_port,
    mqtt_ping,
    wait_for,
)

pytestmark = pytest.mark.integration


async def _next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(10):
        async for message in client.messages:
            return message
    raise AssertionError("message iterator ended")


async def test_broker_round_trip(mosquitto: MosquittoService, topic_prefix: str) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883
    topic = f"{topic_prefix}/hello"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"ping", qos=1)
        message = await _next_message(client)
    assert message.topic.value == topic
    assert message.payload == b"ping"


async def test_restart_keeps_persistent_session(broker_factory, topic_prefix: str) -> None:
    broker: MosquittoService = broker_factory()
    port = broker.port
    topic = f"{topic_prefix}/queued"
    identifier = f"sub-{uuid.uuid4().hex[:8]}"

    # Register a persistent session with a QoS 1 subscription, then go offline.
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=False
    ) as sub:
        await sub.subscribe(topic, qos=1)
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish(topic, b"while-offline", qos=1)
        await pub.publish(f"{topic_prefix}/retained", b"kept", qos=1, retain=True)

    await asyncio.to_thread(broker.restart)
    assert broker.port == port
    assert mqtt_ping(broker.host, broker.port)

    async with aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=False
    ) as sub:
        queued = await _next_message(sub)
        assert queued.payload == b"while-offline"
        await sub.subscribe(f"{topic_prefix}/retained", qos=1)
        retained = await _next_message(sub)
        assert retained.payload == b"kept"
        assert retained.retain


def test_stopped_broker_does_not_answer(broker_factory) -> None:
    broker: MosquittoService = broker_factory()
    broker.stop()
    assert not broker.running
    assert not mqtt_ping(broker.host, broker.port, timeout=0.5)
    broker.start()
    assert mqtt_ping(broker.host, broker.port)


def test_influxdb_ping_and_databases(influxdb: InfluxDBService) -> None:
    assert influxdb.url == f"http://127.0.0.1:{influxdb.port}"
    assert influxdb.ping()
    name = f"harness_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(name)
    assert name in influxdb.databases()


def test_influxdb_query_error_is_reported(influxdb: InfluxDBService) -> None:
    with pytest.raises(ServiceError, match="error parsing query"):
        influxdb.query("SELEC nonsense")


def test_influxdb_auth_and_restart(influxdb_factory) -> None:
    server: InfluxDBService = influxdb_factory(auth=True, username="admin", password="s3cret")
    server.create_database("kept")
    with pytest.raises(ServiceError, match="401"):
        server.query("SHOW DATABASES", authenticate=False)
    server.restart()
    assert "kept" in server.databases()


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.harness import services

    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ServiceError, match="'mosquitto'") as info:
        services.find_binary("mosquitto", "mosquitto", ("/nonexistent",))
    assert "apt-get install -y mosquitto" in str(info.value)


def test_startup_failure_shows_the_log() -> None:
    # Two brokers on one port: the second cannot bind and must say so, with its log.
    first = MosquittoService()
    try:
        first.start()
        second = MosquittoService(port=first.port)
        try:
            with pytest.raises(ServiceError) as info:
                second.start(timeout=10)
            assert "--- log ---" in str(info.value)
            assert "address already in use" in str(info.value).lower()
        finally:
            second.close()
    finally:
        first.close()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_for_returns_value_and_times_out() -> None:
    calls = iter([0, 0, 7])
    assert wait_for(lambda: next(calls), timeout=5, interval=0) == 7
    with pytest.raises(WaitTimeout, match="nothing"):
        wait_for(lambda: None, timeout=0.05, message="nothing")


async def test_async_wait_for_accepts_coroutines() -> None:
    state = {"n": 0}

    async def bump() -> int:
        state["n"] += 1
        return state["n"] if state["n"] >= 3 else 0

    assert await async_wait_for(bump, timeout=5, interval=0) == 3
    assert await async_wait_for(lambda: "sync", timeout=1) == "sync"
    with pytest.raises(WaitTimeout):
        await async_wait_for(lambda: False, timeout=0.05)
