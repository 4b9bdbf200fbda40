"""The site alert topic: each alert's current state for responder apps.

``carewatch/v1/{site}/alerts/{alert_id}`` carries the notification document (``event``
and the whole ``alert``). It is retained while the alert is open, so an app that
connects later sees every open alert at once; when the alert is resolved the resolved
state is published once (not retained) and the retained message is cleared (an empty
retained payload), so the topic tree holds open alerts only.

Publishing is idempotent (the newest state wins), which is why this notifier retries
forever instead of giving up: the topic must converge to the stored state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from device_profiles.errors import TopicError
from device_profiles.topics import ROOT, alert_topic
from stream.notifiers.base import Notification, Notifier, NotifyError

#: ``publish(topic, payload, retain)``: QoS 1, returns after the broker's PUBACK.
Publish = Callable[[str, bytes, bool], Awaitable[None]]


class MqttAlertNotifier(Notifier):
    """Publishes alert state on the site's alert topic through the runtime's connection."""

    retry_forever = True

    def __init__(self, publish: Publish, root: str = ROOT, name: str = "mqtt") -> None:
        super().__init__(name)
        self._publish = publish
        self.root = root

    async def send(self, notification: Notification) -> None:
        alert = notification.body["alert"]
        try:
            topic = alert_topic(alert["site"], alert["id"], self.root)
        except TopicError as exc:
            raise NotifyError(str(exc), retryable=False) from exc
        if alert["state"] == "resolved":
            await self._publish(topic, notification.payload, False)
            await self._publish(topic, b"", True)
        else:
            await self._publish(topic, notification.payload, True)
