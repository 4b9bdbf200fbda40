"""The production broker files in deploy/mosquitto/ run on a real Mosquitto.

``acl.conf`` is checked by what it lets through: a subscriber that may read everything
sees the permitted messages and not the denied ones. Mosquitto delivers one client's
messages in order, so once a later "sentinel" message has arrived, a denied message
published before it is known to have been dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from tests.harness import MosquittoService, mqtt_connack, write_password_file
from tests.harness.services import DEPLOY

pytestmark = pytest.mark.integration

ACL = DEPLOY / "mosquitto" / "acl.conf"
USERS = {
    "carewatch-stream": "stream-pw",
    "gw-1": "gw1-pw",
    "gw-3": "gw3-pw",
    "responders-sunrise": "resp-pw",
}


@asynccontextmanager
async def client(broker: MosquittoService, user: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        username=user,
        password=USERS[user],
        identifier=f"{user}-{uuid.uuid4().hex[:6]}",
    ) as c:
        yield c


async def received_until_sentinel(sub: aiomqtt.Client, sentinel: str) -> list[str]:
    """Topics received up to and including ``sentinel``."""
    topics: list[str] = []
    async with asyncio.timeout(10):
        async for message in sub.messages:
            topics.append(message.topic.value)
            if message.topic.value == sentinel:
                return topics
    raise AssertionError("subscription ended")


@pytest.fixture
def acl_broker(broker_factory, tmp_path: Path) -> MosquittoService:
    passwd = write_password_file(tmp_path / "passwd", USERS)
    broker: MosquittoService = broker_factory(
        anonymous=False, extra_config=f"password_file {passwd}\nacl_file {ACL}\n"
    )
    return broker


async def test_gateway_publishes_only_under_its_own_subtree(acl_broker) -> None:
    async with client(acl_broker, "carewatch-stream") as stream:
        await stream.subscribe("carewatch/v1/#", qos=1)
        async with client(acl_broker, "gw-1") as gw:
            await gw.publish("carewatch/v1/sunrise/gw-1/events", b"{}", qos=1)
            await gw.publish("carewatch/v1/sunrise/gw-2/events", b"{}", qos=1)  # not its own
            await gw.publish("carewatch/v1/maple/gw-1/events", b"{}", qos=1)  # other site
            await gw.publish("carewatch/v1/sunrise/alerts/a-1", b"{}", qos=1)  # not its job
            await gw.publish("carewatch/v1/sunrise/gw-1/status", b"online", qos=1)
        topics = await received_until_sentinel(stream, "carewatch/v1/sunrise/gw-1/status")
    assert topics == ["carewatch/v1/sunrise/gw-1/events", "carewatch/v1/sunrise/gw-1/status"]


async def test_alerts_and_acks_follow_the_sites(acl_broker) -> None:
    async with (
        client(acl_broker, "carewatch-stream") as stream,
        client(acl_broker, "responders-sunrise") as responders,
    ):
        await stream.subscribe("carewatch/v1/+/acks/#", qos=1)
        await responders.subscribe("carewatch/v1/sunrise/alerts/#", qos=1)
        await stream.publish("carewatch/v1/sunrise/alerts/a-1", b"open", qos=1)
        alert_topics = await received_until_sentinel(responders, "carewatch/v1/sunrise/alerts/a-1")
        assert alert_topics == ["carewatch/v1/sunrise/alerts/a-1"]

        await responders.publish("carewatch/v1/maple/acks/a-2", b"ack", qos=1)  # other site
        await responders.publish("carewatch/v1/sunrise/gw-1/events", b"{}", qos=1)  # forged
        await responders.publish("carewatch/v1/sunrise/acks/a-1", b"ack", qos=1)
        ack_topics = await received_until_sentinel(stream, "carewatch/v1/sunrise/acks/a-1")
    assert ack_topics == ["carewatch/v1/sunrise/acks/a-1"]


async def test_unknown_users_and_wrong_passwords_are_refused(acl_broker) -> None:
    assert mqtt_connack(acl_broker.host, acl_broker.port) == 5  # anonymous: not authorized
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            acl_broker.host, acl_broker.port, username="gw-1", password="wrong"
        ):
            pass


def test_production_config_starts(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, with its container paths moved to a temp dir."""
    config = tmp_path / "config"
    config.mkdir()
    write_password_file(config / "passwd", USERS)
    (config / "acl.conf").write_text(ACL.read_text())
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "\nlistener 1883\n" in text and "/mosquitto/data/" in text
    text = (
        text.replace("\nlistener 1883\n", "\nlistener ${port} 127.0.0.1\n")
        .replace("/mosquitto/config/", f"{config}/")
        .replace("/mosquitto/data/", "${data_dir}/")
    )
    # The tests may run as root, where Mosquitto would switch to the "mosquitto" user.
    template = tmp_path / "mosquitto.conf"
    template.write_text("user ${user}\n" + text)
    broker = MosquittoService(template=template)
    try:
        broker.start()
        assert mqtt_connack(broker.host, broker.port) == 5  # no anonymous access
    finally:
        broker.close()
