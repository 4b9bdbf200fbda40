"""Notification outbox and HTTP notifiers against a real loopback HTTP receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from stream.alerts import AlertManager
from stream.clock import ManualClock
from stream.config import StreamConfig, parse_config
from stream.detectors.base import AlertSignal, Severity
from stream.notifiers import build_notifiers
from stream.notifiers.base import Notification
from stream.notifiers.http import DingTalkNotifier, verify_signature
from stream.outbox import OutboxSender
from stream.state import StateStore
from tests.stream.receiver import Receiver

NOON = 1_767_240_000_000
SECRET = "s3cret"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.sqlite", synchronous="normal")
    yield s
    s.close()


def make_config(url: str, kind: str = "webhook", **extra: Any) -> StreamConfig:
    return parse_config(
        {
            "notifiers": {"hook": {"type": kind, "url": url, "secret": SECRET, **extra}},
            "recipients": {"desk": {"notifiers": ["hook"]}},
            "policies": {"default": {"tiers": [{"recipients": ["desk"]}]}},
            "delivery": {
                "max_attempts": 3,
                "backoff_initial": "1s",
                "backoff_max": "10s",
                "mqtt_alerts": False,
            },
            "sites": {"site-a": {"timezone": "Asia/Shanghai"}},
        }
    )


def sos(subject: str = "res-1") -> AlertSignal:
    return AlertSignal(
        condition="emergency",
        subject=subject,
        site="site-a",
        time=NOON,
        severity=Severity.CRITICAL,
        reason="SOS button pressed on the pendant",
        resident=subject,
    )


def raise_alert(store: StateStore, config: StreamConfig, subject: str = "res-1") -> str:
    with store.transaction():
        alert = AlertManager(store, config).apply(sos(subject), NOON)
    assert alert is not None
    return alert.id


def sender_for(store: StateStore, config: StreamConfig, clock: ManualClock) -> OutboxSender:
    return OutboxSender(store, build_notifiers(config.notifiers), clock, config.delivery)


async def test_webhook_delivery_is_signed_and_keyed(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url + "/hook")
    alert_id = raise_alert(store, config)
    clock = ManualClock(NOON)
    sender = sender_for(store, config, clock)
    assert await sender.drain_once() == 1
    await sender.close()
    [got] = receiver.received
    assert got.path == "/hook"
    assert got.headers["Idempotency-Key"] == f"{alert_id}.1.desk.hook"
    assert got.headers["X-Carewatch-Event"] == "raised"
    assert verify_signature(SECRET, got.body, got.headers["X-Carewatch-Signature"])
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Carewatch-Signature"] == expected
    assert got.json["alert"]["id"] == alert_id
    assert got.json["alert"]["severity"] == "critical"
    assert [r.status for r in store.outbox()] == ["sent"]


async def test_retry_keeps_order_per_recipient(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url)
    alert_id = raise_alert(store, config)
    with store.transaction():
        AlertManager(store, config).acknowledge(alert_id, "li", NOON + 1000, source="api")
    receiver.script = [(503, b"busy")]
    clock = ManualClock(NOON + 1000)
    sender = sender_for(store, config, clock)
    await sender.drain_once()  # "raised" fails with 503
    assert await sender.drain_once() == 0  # "acknowledged" waits behind it
    assert [r.status for r in store.outbox()] == ["pending", "pending"]
    clock.advance(5_000)  # past the backoff (1 s +- 20 %, doubled once)
    await sender.drain_once()
    await sender.drain_once()
    await sender.close()
    events = [r.json["event"] for r in receiver.received]
    assert events == ["raised", "raised", "acknowledged"]
    assert [r.status for r in store.outbox()] == ["sent", "sent"]
    assert store.outbox()[0].attempts == 2


async def test_permanent_failure_is_given_up(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url)
    raise_alert(store, config)
    receiver.script = [(404, b"no such hook")]
    results: list[tuple[str, str]] = []
    clock = ManualClock(NOON)
    sender = OutboxSender(
        store,
        build_notifiers(config.notifiers),
        clock,
        config.delivery,
        on_result=lambda n, o: results.append((n, o)),
    )
    await sender.drain_once()
    await sender.close()
    [row] = store.outbox()
    assert row.status == "failed"
    assert "HTTP 404" in (row.last_error or "")
    assert results == [("hook", "failed")]


async def test_attempts_are_bounded(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url)
    raise_alert(store, config)
    receiver.script = [(500, b"x")] * 10
    clock = ManualClock(NOON)
    sender = sender_for(store, config, clock)
    for _ in range(5):
        await sender.drain_once()
        clock.advance(60_000)
    await sender.close()
    assert len(receiver.received) == 3  # max_attempts
    assert store.outbox()[0].status == "failed"


async def test_unreachable_receiver_is_retried(store: StateStore) -> None:
    config = make_config("http://127.0.0.1:9/")  # discard port: connection refused
    raise_alert(store, config)
    sender = sender_for(store, config, ManualClock(NOON))
    await sender.drain_once()
    await sender.close()
    [row] = store.outbox()
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at > NOON


async def test_restart_sends_pending_and_resends_unmarked(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    config = make_config(receiver.url)
    first = raise_alert(store, config, "res-1")
    raise_alert(store, config, "res-2")
    # A crash right after the receiver accepted row 1, before it was marked sent:
    [row1, _row2] = store.outbox()
    notifiers = build_notifiers(config.notifiers)
    await notifiers["hook"].send(Notification(row1.id, row1.notifier, row1.recipient, row1.payload))
    await notifiers["hook"].close()
    store.close()
    # Restart: both rows are still pending and go out; row 1 goes out a second time
    # with the same idempotency key, so the receiver can drop it.
    store = StateStore(path)
    sender = sender_for(store, config, ManualClock(NOON))
    while await sender.drain_once():  # one row per recipient at a time, in order
        pass
    await sender.close()
    keys = [r.headers["Idempotency-Key"] for r in receiver.received]
    assert len(keys) == 3
    assert len(set(keys)) == 2
    assert keys.count(f"{first}.1.desk.hook") == 2
    assert {r.status for r in store.outbox()} == {"sent"}
    store.close()


async def test_wecom_markdown_shape(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url + "/cgi-bin/webhook/send?key=abc", kind="wecom")
    raise_alert(store, config)
    sender = sender_for(store, config, ManualClock(NOON))
    await sender.drain_once()
    await sender.close()
    [got] = receiver.received
    assert got.query == {"key": "abc"}
    doc = got.json
    assert doc["msgtype"] == "markdown"
    assert set(doc["markdown"]) == {"content"}
    assert "SOS button pressed" in doc["markdown"]["content"]
    assert "[CRITICAL]" in doc["markdown"]["content"]


async def test_wecom_rate_limit_is_retried(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url, kind="wecom")
    raise_alert(store, config)
    receiver.script = [(200, json.dumps({"errcode": 45009, "errmsg": "api freq"}).encode())]
    sender = sender_for(store, config, ManualClock(NOON))
    await sender.drain_once()
    await sender.close()
    [row] = store.outbox()
    assert row.status == "pending" and "45009" in (row.last_error or "")


async def test_dingtalk_signed_markdown(store: StateStore, receiver: Receiver) -> None:
    config = make_config(receiver.url + "/robot/send?access_token=tok", kind="dingtalk")
    raise_alert(store, config)
    sender = sender_for(store, config, ManualClock(NOON))
    await sender.drain_once()
    await sender.close()
    [got] = receiver.received
    assert got.query["access_token"] == "tok"
    ts = got.query["timestamp"]
    digest = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
    assert got.query["sign"] == base64.b64encode(digest).decode()  # aiohttp decoded it
    doc = got.json
    assert doc["msgtype"] == "markdown"
    assert set(doc["markdown"]) == {"title", "text"}
    assert doc["markdown"]["title"].startswith("[CRITICAL]")


def test_dingtalk_sign_is_url_encoded() -> None:
    config = make_config("https://oapi.dingtalk.com/robot/send?access_token=t", "dingtalk")
    notifier = DingTalkNotifier(config.notifiers["hook"])
    url = notifier.signed_url(1_700_000_000_000)
    sign = url.split("&sign=")[1]
    digest = hmac.new(SECRET.encode(), f"1700000000000\n{SECRET}".encode(), hashlib.sha256).digest()
    assert unquote_plus(sign) == base64.b64encode(digest).decode()
    assert "+" not in sign and "/" not in sign
