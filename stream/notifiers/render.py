"""Human-readable texts of a notification (group robots, logs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EVENT_WORDS = {
    "raised": "NEW ALERT",
    "paged": "NEW ALERT",
    "escalated": "ESCALATED (not acknowledged)",
    "reminder": "REMINDER (not acknowledged)",
    "severity": "MORE SERIOUS",
    "updated": "UPDATED",
    "acknowledged": "ACKNOWLEDGED",
    "resolved": "RESOLVED",
}


def local_time(ms: int | None, timezone: str) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in the site's timezone ("-" for None)."""
    if ms is None:
        return "-"
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")


def title(body: dict[str, Any]) -> str:
    """One line: ``[CRITICAL] NEW ALERT emergency: res-1 @ site-a``."""
    alert = body["alert"]
    word = _EVENT_WORDS.get(body.get("event", ""), str(body.get("event", "")).upper())
    return (
        f"[{str(alert['severity']).upper()}] {word} {alert['condition']}: "
        f"{alert['subject']} @ {alert['site']}"
    )


def markdown(body: dict[str, Any]) -> str:
    """A short markdown message for group robots (WeCom, DingTalk)."""
    alert = body["alert"]
    tz = str(body.get("timezone") or "UTC")
    lines = [f"### {title(body)}", "", str(alert["reason"]), ""]
    who = [f"> site: {alert['site']}"]
    if alert.get("resident"):
        who.append(f"> resident: {alert['resident']}")
    if alert.get("device"):
        who.append(f"> device: {alert['device']}")
    lines += who
    lines.append(f"> raised: {local_time(alert.get('raised_at'), tz)} ({tz})")
    if alert.get("count", 1) > 1:
        lines.append(f"> occurrences: {alert['count']}")
    if alert.get("acked_by"):
        lines.append(
            f"> acknowledged by {alert['acked_by']} at {local_time(alert['acked_at'], tz)}"
        )
    if alert.get("resolved_by"):
        lines.append(
            f"> resolved by {alert['resolved_by']} at {local_time(alert['resolved_at'], tz)}"
        )
    if body.get("note"):
        lines.append(f"> note: {body['note']}")
    lines.append(f"> alert id: {alert['id']}")
    return "\n".join(lines)


def plain(body: dict[str, Any]) -> str:
    """One line for logs."""
    alert = body["alert"]
    note = f" - note: {body['note']}" if body.get("note") else ""
    who = f" by {body['by']}" if body.get("by") else ""
    return (
        f"{title(body)}{who} - {alert['reason']}{note}"
        f" (alert {alert['id']}, to {body.get('recipient')})"
    )
