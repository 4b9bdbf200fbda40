"""The topic tree on the central broker (contract), as pure builders and parsers.

::

    carewatch/v1/{site}/{gateway}/events     batches of Events (QoS 1)
    carewatch/v1/{site}/{gateway}/status     retained "online"/"offline" (last will)
    carewatch/v1/{site}/{gateway}/health     periodic heartbeat of the gateway
    carewatch/v1/{site}/alerts/{alert_id}    alert state (retained while open)
    carewatch/v1/{site}/acks/{alert_id}      acknowledgements from responder apps

Broker ACLs follow the tree: a gateway may publish only under ``{site}/{gateway}/#``,
a responder app of a site only under ``{site}/acks/#``. ``alerts`` and ``acks`` are
therefore reserved and cannot be gateway ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device_profiles.errors import TopicError
from device_profiles.events import valid_id

ROOT = "carewatch/v1"
RESERVED = frozenset({"alerts", "acks"})
GatewayChannel = Literal["events", "status", "health"]
GATEWAY_CHANNELS: tuple[GatewayChannel, ...] = ("events", "status", "health")
SiteChannel = Literal["alerts", "acks"]


def _check(name: str, value: str) -> str:
    if not valid_id(value) or "/" in value:
        raise TopicError(f"{name}={value!r} is not a valid topic level")
    return value


def gateway_topic(site: str, gateway: str, channel: GatewayChannel, root: str = ROOT) -> str:
    """``{root}/{site}/{gateway}/{channel}``."""
    if channel not in GATEWAY_CHANNELS:
        raise TopicError(f"unknown gateway channel {channel!r}")
    if gateway in RESERVED:
        raise TopicError(f"gateway id {gateway!r} is reserved")
    return f"{root}/{_check('site', site)}/{_check('gateway', gateway)}/{channel}"


def events_topic(site: str, gateway: str, root: str = ROOT) -> str:
    """Topic a gateway publishes its Event batches on."""
    return gateway_topic(site, gateway, "events", root)


def status_topic(site: str, gateway: str, root: str = ROOT) -> str:
    """Retained online/offline topic of a gateway (its broker last will)."""
    return gateway_topic(site, gateway, "status", root)


def health_topic(site: str, gateway: str, root: str = ROOT) -> str:
    """Heartbeat topic of a gateway."""
    return gateway_topic(site, gateway, "health", root)


def alert_topic(site: str, alert_id: str, root: str = ROOT) -> str:
    """State topic of one alert."""
    return f"{root}/{_check('site', site)}/alerts/{_check('alert_id', alert_id)}"


def ack_topic(site: str, alert_id: str, root: str = ROOT) -> str:
    """Topic a responder app publishes an acknowledgement of one alert on."""
    return f"{root}/{_check('site', site)}/acks/{_check('alert_id', alert_id)}"


def subscription(channel: GatewayChannel | SiteChannel, site: str = "+", root: str = ROOT) -> str:
    """Wildcard filter for one channel across gateways (or sites)."""
    if channel in ("alerts", "acks"):
        return f"{root}/{site}/{channel}/+"
    return f"{root}/{site}/+/{channel}"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic of the tree, split into its levels. ``gateway`` or ``alert_id`` is set."""

    site: str
    channel: str
    gateway: str | None = None
    alert_id: str | None = None


def parse_topic(topic: str, root: str = ROOT) -> ParsedTopic:
    """Split a topic of the tree; raises :class:`TopicError` for anything else."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise TopicError(f"{topic!r} is not under {root!r}")
    levels = topic[len(prefix) :].split("/")
    if len(levels) != 3:
        raise TopicError(f"{topic!r}: expected {root}/site/x/y, got {len(levels)} levels")
    site, second, third = levels
    _check("site", site)
    if second in RESERVED:
        return ParsedTopic(site=site, channel=second, alert_id=_check("alert_id", third))
    if third not in GATEWAY_CHANNELS:
        raise TopicError(f"{topic!r}: unknown channel {third!r}")
    return ParsedTopic(site=site, channel=third, gateway=_check("gateway", second))


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest), pure."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True  # '#' also matches the parent level ("a/#" matches "a")
        if i >= len(t_levels):
            return False
        if f not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)
