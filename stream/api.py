"""HTTP API of the stream processor (aiohttp): health, metrics, alerts, silences, absences.

::

    GET    /health                      liveness + broker / InfluxDB / backlog facts
    GET    /metrics                     Prometheus text format
    GET    /alerts?state=open&site=S    alerts, newest first (state: open, raised,
                                        acknowledged, resolved, all; limit=N)
    GET    /alerts/{id}                 one alert with its transitions
    POST   /alerts/{id}/ack             {"by": "nurse-li", "note": "on my way"}
    POST   /alerts/{id}/resolve         {"by": "nurse-li", "note": "false alarm"}
    GET    /silences?site=S             active silences
    POST   /silences                    {"site": S, "device"?, "resident"?, "condition"?,
                                         "starts"?, "ends" | "duration", "by", "comment"?}
    DELETE /silences/{id}
    GET    /absences?resident=R         recorded absences
    POST   /absences                    {"resident": R, "starts", "ends", "reason":
                                         "hospital" | "travel" | "family" | "other",
                                         "by", "comment"?}
    DELETE /absences/{id}
    GET    /gateways                    known gateways: status, counters
    GET    /dead_letters?limit=N        newest malformed inputs with the reason

Times are ms since the epoch or ISO-8601 with an offset; durations as in the config
(``"2h"``). A bad request gets ``400 {"error": "...", "field": "<name>"}``; an unknown
alert 404; acknowledging a resolved alert 409. With ``api.token`` set, every endpoint
except ``/health`` and ``/metrics`` needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from device_profiles.events import valid_id
from stream.alerts import AlertNotFound, AlertStateError
from stream.config import parse_duration_ms, parse_time_ms
from stream.state import Absence, Silence

if TYPE_CHECKING:
    from stream.runtime import StreamService

log = logging.getLogger(__name__)

ABSENCE_REASONS = ("hospital", "travel", "family", "other")
STATE_FILTERS = {
    "open": ("raised", "acknowledged"),
    "raised": ("raised",),
    "acknowledged": ("acknowledged",),
    "resolved": ("resolved",),
    "all": None,
}
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A request field is missing or wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return _json(body, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise BadRequest("body", f"larger than {MAX_BODY} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise BadRequest("body", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "expected a JSON object")
    return data


def _text(
    data: dict[str, Any], name: str, *, required: bool = True, limit: int = 128
) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(name, f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(name, f"{name} must be a non-empty string")
    if len(value) > limit:
        raise BadRequest(name, f"{name} must be at most {limit} characters")
    return value


def _ident(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = _text(data, name, required=required, limit=64)
    if value is not None and not valid_id(value):
        raise BadRequest(name, f"{name}={value!r} is not a valid id")
    return value


def _time(data: dict[str, Any], name: str, default: int | None = None) -> int:
    if data.get(name) is None:
        if default is None:
            raise BadRequest(name, f"{name} is required")
        return default
    try:
        return parse_time_ms(data[name])
    except ValueError as exc:
        raise BadRequest(name, str(exc)) from None


class ApiServer:
    """The aiohttp application bound to a running :class:`StreamService`."""

    def __init__(self, service: StreamService) -> None:
        self.service = service
        self.config = service.config.api
        self.app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/metrics", self.metrics)
        r.add_get("/alerts", self.list_alerts)
        r.add_get("/alerts/{id}", self.get_alert)
        r.add_post("/alerts/{id}/ack", self.ack)
        r.add_post("/alerts/{id}/resolve", self.resolve)
        r.add_get("/silences", self.list_silences)
        r.add_post("/silences", self.create_silence)
        r.add_delete("/silences/{id}", self.delete_silence)
        r.add_get("/absences", self.list_absences)
        r.add_post("/absences", self.create_absence)
        r.add_delete("/absences/{id}", self.delete_absence)
        r.add_get("/gateways", self.gateways)
        r.add_get("/dead_letters", self.dead_letters)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Listen on the configured host and port (port 0: any free port)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info("API listening on http://%s:%s", self.config.host, self.port)

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.config.token and request.path not in ("/health", "/metrics"):
            header = request.headers.get("Authorization", "")
            expected = f"Bearer {self.config.token}"
            if not hmac.compare_digest(header.encode(), expected.encode()):
                return _error(401, "missing or wrong bearer token", "Authorization")
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, exc.message, exc.field)
        except AlertNotFound as exc:
            return _error(404, str(exc))
        except AlertStateError as exc:
            return _error(409, str(exc))

    # --- health and metrics -------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        svc = self.service
        try:
            lines, oldest = svc.store.spool_backlog()
            outbox = svc.store.outbox_counts()
        except Exception as exc:  # the database is the one thing health must not hide
            return _json({"status": "failing", "error": f"state database: {exc}"}, 503)
        now = svc.clock.now_ms()
        mqtt_ok = svc.link.connected.is_set()
        influx = None
        if svc.sink is not None:
            influx = {
                "healthy": svc.sink.healthy,
                "backlog_lines": lines,
                "backlog_age_s": None if oldest is None else round((now - oldest) / 1000, 1),
                "last_error": svc.sink.last_error,
            }
        loops = svc.metrics.failing_loops()
        degraded = not mqtt_ok or (influx is not None and influx["healthy"] is False) or bool(loops)
        return _json(
            {
                "status": "degraded" if degraded else "ok",
                "now": now,
                "mqtt_connected": mqtt_ok,
                "influxdb": influx,
                "outbox": outbox,
                "failing_loops": loops,
                "detectors": [d.name for d in svc.processor.detectors],
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.service.metrics.exposition()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    # --- alerts -------------------------------------------------------------------------
    async def list_alerts(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "open")
        if state not in STATE_FILTERS:
            raise BadRequest("state", f"state={state!r} (allowed: {', '.join(STATE_FILTERS)})")
        site = request.query.get("site")
        if site is not None and not valid_id(site):
            raise BadRequest("site", f"site={site!r} is not a valid id")
        try:
            limit = int(request.query.get("limit", "200"))
            if not 1 <= limit <= 10_000:
                raise ValueError
        except ValueError:
            raise BadRequest("limit", "limit must be an integer from 1 to 10000") from None
        alerts = self.service.store.alerts(states=STATE_FILTERS[state], site=site, limit=limit)
        return _json({"alerts": [msgspec.to_builtins(a) for a in alerts]})

    async def get_alert(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        alert = self.service.store.get_alert(alert_id)
        if alert is None:
            raise AlertNotFound(f"no alert {alert_id!r}")
        body = msgspec.to_builtins(alert)
        body["history"] = self.service.store.transitions(alert_id)
        return _json(body)

    async def ack(self, request: web.Request) -> web.Response:
        return await self._act(request, "ack")

    async def resolve(self, request: web.Request) -> web.Response:
        return await self._act(request, "resolve")

    async def _act(self, request: web.Request, action: str) -> web.Response:
        data = await _body(request)
        by = _text(data, "by")
        note = _text(data, "note", required=False, limit=1000)
        assert by is not None
        alert_id = request.match_info["id"]
        proc = self.service.processor
        if action == "ack":
            alert, changed = proc.acknowledge(alert_id, by, note)
        else:
            alert, changed = proc.resolve(alert_id, by, note)
        self.service.kick()
        return _json({"changed": changed, "alert": msgspec.to_builtins(alert)})

    # --- silences -----------------------------------------------------------------------
    async def list_silences(self, request: web.Request) -> web.Response:
        site = request.query.get("site")
        now = self.service.clock.now_ms()
        items = self.service.store.silences(active_at=now, site=site)
        return _json({"silences": [msgspec.to_builtins(s) for s in items]})

    async def create_silence(self, request: web.Request) -> web.Response:
        data = await _body(request)
        now = self.service.clock.now_ms()
        site = _ident(data, "site", required=True)
        by = _text(data, "by")
        starts = _time(data, "starts", default=now)
        if data.get("ends") is not None:
            ends = _time(data, "ends")
        elif data.get("duration") is not None:
            try:
                ends = starts + parse_duration_ms(data["duration"])
            except ValueError as exc:
                raise BadRequest("duration", str(exc)) from None
        else:
            raise BadRequest("ends", "ends or duration is required (a silence must expire)")
        if ends <= starts:
            raise BadRequest("ends", "ends must be after starts")
        assert site is not None and by is not None
        silence = Silence(
            id=secrets.token_hex(6),
            site=site,
            starts=starts,
            ends=ends,
            created_by=by,
            created_at=now,
            device=_ident(data, "device", required=False),
            resident=_ident(data, "resident", required=False),
            condition=_text(data, "condition", required=False, limit=64),
            comment=_text(data, "comment", required=False, limit=1000) or "",
        )
        store = self.service.store
        with store.transaction():
            store.put_silence(silence)
            self.service.processor.alerts.silences_changed(now)
        self.service.kick()
        return _json(msgspec.to_builtins(silence), 201)

    async def delete_silence(self, request: web.Request) -> web.Response:
        store = self.service.store
        now = self.service.clock.now_ms()
        with store.transaction():
            found = store.delete_silence(request.match_info["id"])
            if found:
                self.service.processor.alerts.silences_changed(now)
        if not found:
            return _error(404, f"no silence {request.match_info['id']!r}")
        self.service.kick()
        return _json({"deleted": request.match_info["id"]})

    # --- absences -----------------------------------------------------------------------
    async def list_absences(self, request: web.Request) -> web.Response:
        resident = request.query.get("resident")
        items = self.service.store.absences(resident)
        return _json({"absences": [msgspec.to_builtins(a) for a in items]})

    async def create_absence(self, request: web.Request) -> web.Response:
        data = await _body(request)
        now = self.service.clock.now_ms()
        resident = _ident(data, "resident", required=True)
        by = _text(data, "by")
        reason = _text(data, "reason")
        if reason not in ABSENCE_REASONS:
            raise BadRequest("reason", f"reason must be one of {', '.join(ABSENCE_REASONS)}")
        starts = _time(data, "starts", default=now)
        ends = _time(data, "ends")
        if ends <= starts:
            raise BadRequest("ends", "ends must be after starts")
        assert resident is not None and by is not None and reason is not None
        absence = Absence(
            id=secrets.token_hex(6),
            resident=resident,
            starts=starts,
            ends=ends,
            reason=reason,
            created_by=by,
            created_at=now,
            comment=_text(data, "comment", required=False, limit=1000) or "",
        )
        with self.service.store.transaction():
            self.service.store.put_absence(absence)
        return _json(msgspec.to_builtins(absence), 201)

    async def delete_absence(self, request: web.Request) -> web.Response:
        with self.service.store.transaction():
            found = self.service.store.delete_absence(request.match_info["id"])
        if not found:
            return _error(404, f"no absence {request.match_info['id']!r}")
        return _json({"deleted": request.match_info["id"]})

    # --- operations ---------------------------------------------------------------------
    async def gateways(self, request: web.Request) -> web.Response:
        out = []
        for g in self.service.store.gateways():
            out.append(
                {
                    "gateway": g.gateway,
                    "site": g.site,
                    "online": g.online,
                    "status_at": g.status_at,
                    "last_seen": g.last_seen,
                    "high_water_seq": g.seqs.high,
                    "missing_seqs": g.seqs.missing(),
                    "events": g.events,
                    "duplicates": g.duplicates,
                    "lost": g.lost,
                    "resets": g.resets,
                    "late": g.late,
                    "devices": g.devices or {},
                }
            )
        return _json({"gateways": out})

    async def dead_letters(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
            if not 1 <= limit <= 10_000:
                raise ValueError
        except ValueError:
            raise BadRequest("limit", "limit must be an integer from 1 to 10000") from None
        return _json({"dead_letters": self.service.store.dead_letters(limit)})
