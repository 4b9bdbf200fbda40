"""HTTP API: alerts, silences, absences, errors naming the field, bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from device_profiles.events import encode_batch
from device_profiles.topics import events_topic
from stream.clock import ManualClock
from stream.config import parse_config
from stream.runtime import StreamService
from tests.stream.helpers import T0, ev

TOKEN = "t0ken"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[StreamService]:
    config = parse_config(
        {
            "mqtt": {"url": "mqtt://127.0.0.1:9"},  # never connected in these tests
            "state": {"path": str(tmp_path / "s.sqlite"), "synchronous": "normal"},
            "api": {"port": 0, "token": TOKEN},
            "notifiers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "recipients": {"desk": {"notifiers": ["hook"]}},
            "policies": {"default": {"tiers": [{"recipients": ["desk"]}]}},
            "sites": {"site-a": {"timezone": "UTC", "quiet_hours": False}},
            "detectors": {"alarm": {"fall": False}},
        }
    )
    svc = StreamService(config, clock=ManualClock(T0 + 10_000))
    assert svc.api is not None
    await svc.api.start()
    yield svc
    await svc.close()


@pytest.fixture
async def http(service: StreamService) -> AsyncIterator[Any]:
    assert service.api is not None
    base = f"http://127.0.0.1:{service.api.port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as session:
        yield session


def press(service: StreamService, seq: int = 1) -> None:
    service.processor.handle_message(events_topic("site-a", "gw-1"), encode_batch([ev(seq)]))


def desk_pages(service: StreamService) -> int:
    return sum(1 for row in service.store.outbox() if row.notifier == "hook")


async def test_token_is_required_except_for_health_and_metrics(service: StreamService) -> None:
    assert service.api is not None
    base = f"http://127.0.0.1:{service.api.port}"
    async with aiohttp.ClientSession(base_url=base) as anon:
        async with anon.get("/alerts") as r:
            assert r.status == 401
            assert (await r.json())["field"] == "Authorization"
        async with anon.get("/health") as r:
            assert r.status == 200
            body = await r.json()
            assert body["status"] == "degraded" and body["mqtt_connected"] is False
        async with anon.get("/metrics") as r:
            assert r.status == 200
            assert "carewatch_stream_alerts" in await r.text()


async def test_alert_list_get_ack_resolve(service: StreamService, http: Any) -> None:
    press(service)
    async with http.get("/alerts") as r:
        [alert] = (await r.json())["alerts"]
    async with http.get("/alerts", params={"state": "bogus"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "state"
    async with http.get("/alerts", params={"limit": "0"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "limit"
    async with http.get("/alerts/nope") as r:
        assert r.status == 404
    async with http.post(f"/alerts/{alert['id']}/ack", data=b"[1]") as r:
        assert r.status == 400 and (await r.json())["field"] == "body"
    async with http.post(f"/alerts/{alert['id']}/ack", json={"by": 7}) as r:
        assert r.status == 400 and (await r.json())["field"] == "by"
    async with http.post(f"/alerts/{alert['id']}/ack", json={"by": "li", "note": "going"}) as r:
        assert r.status == 200
        body = await r.json()
        assert body["changed"] is True and body["alert"]["acked_by"] == "li"
    async with http.post(f"/alerts/{alert['id']}/resolve", json={"by": "li"}) as r:
        assert (await r.json())["alert"]["state"] == "resolved"
    async with http.post(f"/alerts/{alert['id']}/ack", json={"by": "li"}) as r:
        assert r.status == 409
    async with http.get(f"/alerts/{alert['id']}") as r:
        history = [(h["kind"], h["by"], h["source"]) for h in (await r.json())["history"]]
    assert history == [
        ("raised", None, "detector"),
        ("acknowledged", "li", "api"),
        ("resolved", "li", "api"),
    ]
    async with http.get("/alerts", params={"state": "resolved"}) as r:
        assert len((await r.json())["alerts"]) == 1


async def test_silence_crud_and_effect(service: StreamService, http: Any) -> None:
    async with http.post("/silences", json={"site": "site-a", "by": "tech"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "ends"
    async with http.post("/silences", json={"site": "bad site", "by": "x", "duration": 1}) as r:
        assert r.status == 400 and (await r.json())["field"] == "site"
    async with http.post("/silences", json={"site": "site-a", "by": "x", "duration": "soon"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "duration"
    async with http.post(
        "/silences",
        json={"site": "site-a", "device": "pendant-1", "by": "tech", "duration": "2h",
              "comment": "battery swap"},
    ) as r:  # fmt: skip
        assert r.status == 201
        silence = await r.json()
    assert silence["ends"] == T0 + 10_000 + 7_200_000
    async with http.get("/silences", params={"site": "site-a"}) as r:
        assert [s["id"] for s in (await r.json())["silences"]] == [silence["id"]]
    press(service)
    assert desk_pages(service) == 0  # the device is being serviced: nobody paged
    async with http.delete(f"/silences/{silence['id']}") as r:
        assert r.status == 200
    async with http.delete(f"/silences/{silence['id']}") as r:
        assert r.status == 404
    service.processor.run_due()
    assert desk_pages(service) == 1  # silence lifted: the open alert pages now


async def test_absences(service: StreamService, http: Any) -> None:
    body = {"resident": "res-1", "by": "li", "reason": "hospital",
            "starts": "2026-01-01T00:00:00Z", "ends": "2026-01-05T00:00:00Z"}  # fmt: skip
    async with http.post("/absences", json={**body, "reason": "vacation?"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "reason"
    async with http.post("/absences", json={**body, "ends": "yesterday"}) as r:
        assert r.status == 400 and (await r.json())["field"] == "ends"
    async with http.post("/absences", json=body) as r:
        assert r.status == 201
        absence = await r.json()
    ctx = service.processor.ctx
    assert ctx.is_absent("res-1", T0 + 86_400_000)
    assert not ctx.is_absent("res-1", T0 + 5 * 86_400_000)
    assert not ctx.is_absent("res-2", T0 + 86_400_000)
    async with http.get("/absences", params={"resident": "res-1"}) as r:
        assert [a["id"] for a in (await r.json())["absences"]] == [absence["id"]]
    async with http.delete(f"/absences/{absence['id']}") as r:
        assert r.status == 200
    assert not ctx.is_absent("res-1", T0 + 86_400_000)


async def test_gateways_and_dead_letters(service: StreamService, http: Any) -> None:
    press(service, 1)
    press(service, 1)
    service.processor.handle_message(events_topic("site-a", "gw-1"), b"garbage")
    async with http.get("/gateways") as r:
        [gw] = (await r.json())["gateways"]
    assert (gw["gateway"], gw["events"], gw["duplicates"]) == ("gw-1", 1, 1)
    async with http.get("/dead_letters") as r:
        [dead] = (await r.json())["dead_letters"]
    assert dead["reason"].startswith("json:") and dead["payload"] == "garbage"
