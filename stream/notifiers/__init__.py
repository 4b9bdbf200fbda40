"""Notifiers: MQTT alert topic, signed webhooks, WeCom and DingTalk group robots, log.

:func:`build_notifiers` turns the config's ``notifiers:`` section into objects; the
runtime adds the MQTT alert-topic notifier (named ``mqtt``) itself, because it
publishes through the runtime's own broker connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from stream.config import ConfigProblems, NotifierConfig
from stream.notifiers import render
from stream.notifiers.base import Notification, Notifier, NotifyError

__all__ = ["LogNotifier", "Notification", "Notifier", "NotifyError", "build_notifiers"]

log = logging.getLogger("carewatch.notify")


class LogNotifier(Notifier):
    """Writes each notification to the log (demos, and a last-resort channel)."""

    async def send(self, notification: Notification) -> None:
        log.warning("%s", render.plain(notification.body))


def build_notifiers(configs: Mapping[str, NotifierConfig]) -> dict[str, Notifier]:
    """One notifier object per configured notifier.

    Raises :class:`~stream.config.ConfigProblems` listing every notifier that cannot be
    built (``carewatch stream --check`` reports them with the schema's problems).
    """
    from stream.notifiers.http import DingTalkNotifier, WebhookNotifier, WeComNotifier

    out: dict[str, Notifier] = {}
    problems: list[tuple[str, str]] = []
    for name, cfg in configs.items():
        try:
            if cfg.type == "webhook":
                out[name] = WebhookNotifier(cfg)
            elif cfg.type == "wecom":
                out[name] = WeComNotifier(cfg)
            elif cfg.type == "dingtalk":
                out[name] = DingTalkNotifier(cfg)
            elif cfg.type == "log":
                out[name] = LogNotifier(name)
            else:  # config validation allows only the types above
                raise ValueError(f"unknown type {cfg.type!r}")
        except ValueError as exc:
            problems.append((f"notifiers.{name}", str(exc)))
    if problems:
        raise ConfigProblems("<notifiers>", problems)
    return out
