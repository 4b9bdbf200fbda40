"""The notifier interface: how an alert transition reaches someone.

A notifier delivers ONE notification per call. The outbox sender
(:mod:`stream.outbox`) decides when to call it, retries with backoff, keeps the order of
one recipient's notifications and records the outcome; a notifier only has to say
whether a failure is worth retrying.

Hooks, and when the runtime calls them:

- :meth:`Notifier.start` once before the first send (open HTTP sessions);
- :meth:`Notifier.send` for each due outbox row; return normally when the receiver
  accepted it, raise :class:`NotifyError` (``retryable`` or not) otherwise;
- :meth:`Notifier.close` once at shutdown.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from device_profiles.errors import CarewatchError


class NotifyError(CarewatchError):
    """A delivery failed. ``retryable`` False means retrying cannot help (bad URL, 4xx)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Notification:
    """One outbox row, ready to deliver.

    ``payload`` is the JSON document built by :func:`stream.alerts.notification_payload`
    (``id`` = ``outbox_id``, the idempotency key; ``event``; ``alert``...); ``body`` is it
    decoded.
    """

    outbox_id: str
    notifier: str
    recipient: str
    payload: bytes

    @property
    def body(self) -> dict[str, Any]:
        """The payload as a dict."""
        decoded: dict[str, Any] = json.loads(self.payload)
        return decoded

    @property
    def event(self) -> str:
        """The transition: raised, paged, escalated, reminder, severity, updated,
        acknowledged, resolved."""
        return str(self.body.get("event", ""))


class Notifier(ABC):
    """Base of every delivery channel."""

    #: Retries never give up on this notifier (the MQTT alert topic must converge).
    retry_forever: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Prepare for sending (called once)."""

    @abstractmethod
    async def send(self, notification: Notification) -> None:
        """Deliver one notification or raise :class:`NotifyError`."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release resources (called once at shutdown)."""
