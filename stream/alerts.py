"""The alert manager: lifecycle, dedup, escalation, quiet hours, silences, acknowledgements.

Lifecycle: ``raised -> acknowledged -> resolved`` (or ``raised -> resolved``), plus
``resolved`` automatically when a detector says the condition cleared. One open alert
per dedup key (``site/condition/subject``): a repeated raise updates it (``count``,
reason, a higher severity) instead of paging again.

Every method runs inside the caller's :meth:`StateStore.transaction` and only WRITES:
the alert row, a transition row and one outbox row per (transition, recipient,
notifier) plus one for the site's MQTT alert topic. Nothing is sent from here; the
notification sender (:mod:`stream.outbox`) drains the outbox after the commit, so a
transition is always stored before anything about it leaves the process.

Paging rules (per site, from its escalation policy):

- tier 0 of the policy is paged when an alert is raised; unacknowledged after the
  severity's ``ack_timeout`` it goes to the next tier, and so on; every recipient paged
  so far gets a reminder each ``reminder`` period until someone acknowledges;
- ``info`` alerts never page (dashboards and the MQTT topic only);
- during the site's quiet hours (local time) only severities in ``night_paging`` page
  (critical and high by default) and never an ``operations`` alert: the others wait
  for the morning (a low battery never pages at night);
- an active silence (maintenance window) matching the alert's site / device / resident /
  condition defers its pages until the silence ends (or is deleted); the alert is still
  recorded and published on the MQTT topic, flagged ``silenced``;
- a higher severity tells everyone paged so far at once, unless a silence or quiet
  hours hold this alert's pages: then a reminder at the new severity goes out when they
  end (an acknowledged alert's responders see the change on the MQTT topic and the app).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from device_profiles.errors import CarewatchError
from stream.config import PolicyConfig, StreamConfig
from stream.detectors.base import AlertSignal, Audience, Severity
from stream.state import AlertRecord, StateStore, database_failure

log = logging.getLogger(__name__)

#: The night (minutes after local midnight) in which operations alerts never page.
OPERATIONS_NIGHT = (22 * 60, 7 * 60)

_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}
MQTT_NOTIFIER = "mqtt"
MQTT_RECIPIENT = "site"

TransitionHook = Callable[[AlertRecord, str, int], None]
ErrorHook = Callable[[str], None]  # on_error(where): a failure contained (metrics)

#: An alert whose timer pass failed (a bug, an unreadable row) is tried again this much
#: later: it neither stops the other alerts nor fires in a tight loop.
ALERT_RETRY_MS = 60_000


class AlertNotFound(CarewatchError):
    """No alert with that id (or not in the given site)."""


class AlertStateError(CarewatchError):
    """The requested transition is not possible from the alert's state."""


def rank(severity: str) -> int:
    """Order of severities (info < warning < high < critical)."""
    return _RANK.get(severity, 0)


def new_alert_id() -> str:
    """A fresh alert id, safe as an MQTT topic level."""
    return secrets.token_hex(8)


class AlertManager:
    """Applies detector signals, timers and responder actions to the stored alerts.

    ``on_transition(alert, kind, at)`` is called for each stored transition (metrics,
    telemetry), inside the same transaction.
    """

    def __init__(
        self,
        store: StateStore,
        config: StreamConfig,
        on_transition: TransitionHook | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_transition = on_transition
        self.on_error = on_error
        self._zones: dict[str, ZoneInfo] = {}

    # --- detector signals ---------------------------------------------------------------
    def apply(self, signal: AlertSignal, now: int) -> AlertRecord | None:
        """Apply a detector's raise or clear; returns the affected alert (None: nothing)."""
        if signal.action == "clear":
            existing = self.store.open_alert(signal.key)
            if existing is None:
                return None
            return self._resolve(existing, now, by="auto", source="detector", note=signal.reason)
        existing = self.store.open_alert(signal.key)
        if existing is not None:
            return self._repeat(existing, signal, now)
        return self._raise(signal, now)

    def _raise(self, signal: AlertSignal, now: int) -> AlertRecord:
        alert = AlertRecord(
            id=new_alert_id(),
            key=signal.key,
            site=signal.site,
            condition=signal.condition,
            subject=signal.subject,
            state="raised",
            severity=str(signal.severity),
            audience=str(signal.audience),
            reason=signal.reason,
            raised_at=now,
            updated_at=now,
            signal_time=signal.time,
            resident=signal.resident,
            device=signal.device,
            details=dict(signal.details),
        )
        n = self._transition(alert, "raised", now, source="detector")
        self._page_first(alert, now, n)
        self.store.put_alert(alert)
        log.info("alert %s raised: %s %s (%s)", alert.id, alert.severity, alert.key, alert.reason)
        return alert

    def _repeat(self, alert: AlertRecord, signal: AlertSignal, now: int) -> AlertRecord:
        alert.count += 1
        alert.updated_at = now
        alert.details = {**alert.details, **dict(signal.details)}
        if rank(signal.severity) > rank(alert.severity):
            alert.severity = str(signal.severity)
            alert.reason = signal.reason
            n = self._transition(alert, "severity", now, source="detector", note=signal.reason)
            if alert.tier < 0:
                self._page_first(alert, now, n)
            else:
                # Higher stakes: tell everyone paged so far, unless a silence or quiet
                # hours hold pages for this alert now.
                allowed, _ = self._may_page(alert, now)
                if alert.state == "raised":
                    # Restart the clocks with the new severity's (shorter) times.
                    self._arm(alert, now)
                    if not allowed:
                        # A reminder due now is held like the other timers: it tells
                        # everyone paged, at the new severity, when paging is allowed.
                        alert.remind_at = now
                if allowed:
                    self._notify(alert, "severity", now, n, alert.notified)
        else:
            if signal.reason != alert.reason:
                alert.reason = signal.reason
            self._transition(alert, "updated", now, source="detector")
        self.store.put_alert(alert)
        return alert

    # --- responders ---------------------------------------------------------------------
    def acknowledge(
        self,
        alert_id: str,
        by: str,
        now: int,
        *,
        source: str,
        note: str | None = None,
        site: str | None = None,
    ) -> tuple[AlertRecord, bool]:
        """Acknowledge an alert: escalation and reminders stop. Returns (alert, changed).

        Acknowledging an acknowledged alert changes nothing (idempotent); a resolved one
        raises :class:`AlertStateError`.
        """
        alert = self._get(alert_id, site)
        if alert.state == "acknowledged":
            return alert, False
        if alert.state == "resolved":
            raise AlertStateError(f"alert {alert_id} is already resolved")
        alert.state = "acknowledged"
        alert.acked_at, alert.acked_by = now, by
        alert.updated_at = now
        alert.note = note or alert.note
        alert.page_at = alert.escalate_at = alert.remind_at = alert.held_until = None
        n = self._transition(alert, "acknowledged", now, by=by, source=source, note=note)
        self._notify(alert, "acknowledged", now, n, alert.notified, note=note)
        self.store.put_alert(alert)
        log.info("alert %s acknowledged by %s (%s)", alert.id, by, source)
        return alert, True

    def resolve(
        self,
        alert_id: str,
        by: str,
        now: int,
        *,
        source: str,
        note: str | None = None,
        site: str | None = None,
    ) -> tuple[AlertRecord, bool]:
        """Resolve an alert. Returns (alert, changed); resolving twice changes nothing."""
        alert = self._get(alert_id, site)
        if alert.state == "resolved":
            return alert, False
        return self._resolve(alert, now, by=by, source=source, note=note), True

    def _resolve(
        self, alert: AlertRecord, now: int, *, by: str, source: str, note: str | None
    ) -> AlertRecord:
        alert.state = "resolved"
        alert.resolved_at, alert.resolved_by = now, by
        alert.updated_at = now
        alert.note = note or alert.note
        alert.page_at = alert.escalate_at = alert.remind_at = alert.held_until = None
        n = self._transition(alert, "resolved", now, by=by, source=source, note=note)
        self._notify(alert, "resolved", now, n, alert.notified, note=note)
        self.store.put_alert(alert)
        log.info("alert %s resolved by %s (%s)", alert.id, by, source)
        return alert

    def _get(self, alert_id: str, site: str | None) -> AlertRecord:
        alert = self.store.get_alert(alert_id)
        if alert is None or (site is not None and alert.site != site):
            raise AlertNotFound(f"no alert {alert_id!r}" + (f" in site {site!r}" if site else ""))
        return alert

    # --- timers -------------------------------------------------------------------------
    def next_deadline(self) -> int | None:
        """When :meth:`tick` must next run."""
        return self.store.next_alert_deadline()

    def tick(self, now: int) -> int:
        """Run due pages, escalations and reminders; returns how many alerts it handled.

        Each alert is handled on its own (a savepoint): one that fails is rolled back,
        logged, counted (``on_error("alert_timer")``) and tried again
        :data:`ALERT_RETRY_MS` later, and the others go on. A failure of the database
        itself is raised (the caller retries the whole pass).
        """
        changed = 0
        for alert_id, body in self.store.due_alert_rows(now):
            try:
                with self.store.savepoint():
                    alert = _alert_decoder.decode(body)
                    self._tick_one(alert, now)
                    self.store.put_alert(alert)
            except Exception as exc:
                if database_failure(exc):
                    raise
                log.exception("alert %s: timer pass failed; retried in 60 s", alert_id)
                self.store.postpone_alert(alert_id, now + ALERT_RETRY_MS)
                if self.on_error is not None:
                    self.on_error("alert_timer")
            changed += 1
        return changed

    def _tick_one(self, alert: AlertRecord, now: int) -> None:
        allowed, retry_at = self._may_page(alert, now)
        if not allowed and alert.silenced and retry_at is not None:
            # A silence holds whatever fell due, with its due time kept: at the end of
            # the silence, or when it is deleted (silences_changed), it happens at once.
            alert.held_until = retry_at
            return
        alert.held_until = None
        if alert.page_at is not None and alert.page_at <= now:
            if alert.tier >= 0:
                # Already paged (a severity upgrade paged at once): nothing was deferred.
                alert.page_at = None
            elif not allowed:
                alert.page_at = retry_at
                return
            else:
                alert.page_at = None
                n = self._transition(alert, "paged", now, source="timer")
                self._page_first(alert, now, n)
                return
        if alert.escalate_at is not None and alert.escalate_at <= now:
            if not allowed:
                alert.escalate_at = retry_at
            else:
                self._escalate(alert, now)
                return
        if alert.remind_at is not None and alert.remind_at <= now:
            if not allowed:
                alert.remind_at = retry_at
            else:
                n = self._transition(alert, "reminder", now, source="timer")
                self._notify(alert, "reminder", now, n, alert.notified)
                period = self._policy(alert).reminder_ms.get(alert.severity, 0)
                alert.remind_at = now + period if period > 0 else None

    def _escalate(self, alert: AlertRecord, now: int) -> None:
        tiers = self._tiers(alert)
        next_tier = alert.tier + 1
        if next_tier >= len(tiers):
            alert.escalate_at = None
            return
        alert.tier = next_tier
        note = f"tier {next_tier + 1}"
        n = self._transition(alert, "escalated", now, source="timer", note=note)
        recipients = list(tiers[next_tier])
        self._notify(alert, "escalated", now, n, recipients, note=note)
        alert.notified = _merge(alert.notified, recipients)
        self._arm(alert, now)
        log.info("alert %s escalated to tier %d", alert.id, next_tier + 1)

    # --- silences -----------------------------------------------------------------------
    def silences_changed(self, now: int) -> None:
        """Re-evaluate deferred pages and held timers at once (a silence was created or
        deleted): the next tick pages, escalates and reminds what is due and no longer
        silenced, and holds the rest until the end of the silences still matching."""
        for alert in self.store.open_alerts():
            changed = False
            if alert.page_at is not None:
                alert.page_at = now
                changed = True
            if alert.held_until is not None:
                # Escalations and reminders kept their due times while held: only those
                # really due fire (nothing is brought forward).
                alert.held_until = now
                changed = True
            if changed:
                self.store.put_alert(alert)

    # --- paging helpers -----------------------------------------------------------------
    def _policy(self, alert: AlertRecord) -> PolicyConfig:
        return self.config.policy(alert.site)

    def _tiers(self, alert: AlertRecord) -> tuple[tuple[str, ...], ...]:
        policy = self._policy(alert)
        if alert.audience == Audience.OPERATIONS:
            return (policy.operations,) if policy.operations else ()
        return policy.tiers

    def _may_page(self, alert: AlertRecord, now: int) -> tuple[bool, int | None]:
        """(paging allowed now, when to try again if not; None = never)."""
        if alert.severity == Severity.INFO:
            return False, None
        silence_end = None
        for silence in self.store.silences(active_at=now, site=alert.site):
            if silence.matches(alert, now):
                silence_end = max(silence_end or 0, silence.ends)
        if silence_end is not None:
            alert.silenced = True
            return False, silence_end
        alert.silenced = False
        night_ok = (
            alert.audience != Audience.OPERATIONS
            and alert.severity in self._policy(alert).night_paging
        )
        if not night_ok:
            quiet_end = self.quiet_until(
                alert.site, now, operations=alert.audience == Audience.OPERATIONS
            )
            if quiet_end is not None:
                return False, quiet_end
        return True, None

    def quiet_until(self, site: str, now: int, *, operations: bool = False) -> int | None:
        """End of the site's quiet hours (ms UTC) when ``now`` is inside them, else None.

        Operations alerts never page at night: for them a site without quiet hours
        (``quiet_hours: false``, e.g. a 24-hour hotline desk) still has the default
        night, 22:00-07:00 local.
        """
        cfg = self.config.site(site)
        start, end = cfg.quiet_start_min, cfg.quiet_end_min
        if start is None or end is None or start == end:
            if not operations:
                return None
            start, end = OPERATIONS_NIGHT
        zone = self._zones.get(cfg.timezone)
        if zone is None:
            zone = self._zones[cfg.timezone] = ZoneInfo(cfg.timezone)
        local = datetime.fromtimestamp(now / 1000, zone)
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end_local = day + timedelta(minutes=end)
        if end_local <= local:
            end_local += timedelta(days=1)
        # Rebuild in the zone so a DST change inside the night lands on the right hour.
        end_local = end_local.replace(tzinfo=None).replace(tzinfo=zone)
        return int(end_local.timestamp() * 1000)

    def _page_first(self, alert: AlertRecord, now: int, n: int) -> None:
        """Page tier 0 now, or defer the page (quiet hours, silence).

        Once paged, the deferred page is cleared: a page deferred by quiet hours that an
        upgrade to a night-paging severity sent at once must not go out again in the
        morning (a second "raised", and the escalation tier set back to 0).
        """
        if alert.state != "raised" or alert.tier >= 0:
            alert.page_at = None
            return
        allowed, retry_at = self._may_page(alert, now)
        if not allowed:
            alert.page_at = retry_at
            return
        alert.page_at = None
        tiers = self._tiers(alert)
        if not tiers:
            return  # nobody on call configured: the MQTT topic is all there is
        recipients = list(tiers[0])
        alert.tier = 0
        self._notify(alert, "raised", now, n, recipients)
        alert.notified = _merge(alert.notified, recipients)
        self._arm(alert, now)

    def _arm(self, alert: AlertRecord, now: int) -> None:
        policy = self._policy(alert)
        timeout = policy.ack_timeout_ms.get(alert.severity, 0)
        has_next = alert.tier + 1 < len(self._tiers(alert))
        alert.escalate_at = now + timeout if (timeout > 0 and has_next) else None
        period = policy.reminder_ms.get(alert.severity, 0)
        alert.remind_at = now + period if period > 0 else None

    def _transition(
        self,
        alert: AlertRecord,
        kind: str,
        now: int,
        *,
        by: str | None = None,
        source: str | None = None,
        note: str | None = None,
    ) -> int:
        alert.transitions += 1
        n = alert.transitions
        self.store.add_transition(alert.id, n, kind, now, by=by, source=source, note=note)
        if self.config.delivery.mqtt_alerts:
            payload = notification_payload(
                alert,
                kind,
                now,
                f"{alert.id}.{n}.mqtt",
                recipient=MQTT_RECIPIENT,
                timezone=self._tz(alert),
                by=by,
                note=note,
            )
            self.store.add_outbox(
                [(f"{alert.id}.{n}.mqtt", alert.id, MQTT_NOTIFIER, MQTT_RECIPIENT, payload)], now
            )
        if self.on_transition is not None:
            self.on_transition(alert, kind, now)
        return n

    def _notify(
        self,
        alert: AlertRecord,
        kind: str,
        now: int,
        n: int,
        recipients: list[str],
        *,
        note: str | None = None,
    ) -> None:
        """Queue one notification per recipient and notifier; ``note`` is the
        transition's (a responder's note on an acknowledgement or resolution, the tier of
        an escalation), as on the MQTT alert topic."""
        rows: list[tuple[str, str, str, str, bytes]] = []
        tz = self._tz(alert)
        by = alert.acked_by if kind == "acknowledged" else None
        by = alert.resolved_by if kind == "resolved" else by
        for recipient in recipients:
            rcfg = self.config.recipients.get(recipient)
            if rcfg is None:
                log.warning("alert %s: recipient %r is not configured", alert.id, recipient)
                continue
            for notifier in rcfg.notifiers:
                outbox_id = f"{alert.id}.{n}.{recipient}.{notifier}"
                payload = notification_payload(
                    alert, kind, now, outbox_id, recipient=recipient, timezone=tz, by=by, note=note
                )
                rows.append((outbox_id, alert.id, notifier, recipient, payload))
        self.store.add_outbox(rows, now)

    def _tz(self, alert: AlertRecord) -> str:
        return self.config.site(alert.site).timezone


_alert_decoder = msgspec.json.Decoder(AlertRecord)


def _merge(existing: list[str], more: list[str]) -> list[str]:
    return existing + [r for r in more if r not in existing]


_encoder = msgspec.json.Encoder()


def notification_payload(
    alert: AlertRecord,
    kind: str,
    at: int,
    outbox_id: str,
    *,
    recipient: str,
    timezone: str,
    by: str | None = None,
    note: str | None = None,
) -> bytes:
    """The JSON document every notifier renders from (and webhooks receive as is).

    ``id`` doubles as the idempotency key: a receiver that sees an ``id`` twice (a
    resend after a crash between delivery and bookkeeping) should drop the second.
    """
    body: dict[str, Any] = {
        "id": outbox_id,
        "event": kind,
        "at": at,
        "by": by,
        "note": note,
        "recipient": recipient,
        "timezone": timezone,
        "alert": msgspec.to_builtins(alert),
    }
    return _encoder.encode(body)
