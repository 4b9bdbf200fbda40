"""The topic tree (contract): builders, parser and filter matching, without a broker."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.errors import TopicError
from device_profiles.topics import (
    ParsedTopic,
    ack_topic,
    alert_topic,
    events_topic,
    health_topic,
    matches,
    parse_topic,
    status_topic,
    subscription,
)


def test_builders_follow_the_tree() -> None:
    assert events_topic("s1", "gw1") == "carewatch/v1/s1/gw1/events"
    assert status_topic("s1", "gw1") == "carewatch/v1/s1/gw1/status"
    assert health_topic("s1", "gw1") == "carewatch/v1/s1/gw1/health"
    assert alert_topic("s1", "a-1") == "carewatch/v1/s1/alerts/a-1"
    assert ack_topic("s1", "a-1") == "carewatch/v1/s1/acks/a-1"
    assert events_topic("s1", "gw1", root="t-12/carewatch/v1") == "t-12/carewatch/v1/s1/gw1/events"


@pytest.mark.parametrize(
    "topic",
    [
        "carewatch/v1/s1/gw1/events",
        "carewatch/v1/s1/gw1/status",
        "carewatch/v1/s1/alerts/a-1",
        "carewatch/v1/s1/acks/a-1",
    ],
)
def test_parse_inverts_build(topic: str) -> None:
    parsed = parse_topic(topic)
    assert parsed.site == "s1"
    if parsed.gateway:
        assert f"carewatch/v1/s1/{parsed.gateway}/{parsed.channel}" == topic
    else:
        assert f"carewatch/v1/s1/{parsed.channel}/{parsed.alert_id}" == topic


def test_parse_reports_what_is_wrong() -> None:
    with pytest.raises(TopicError, match="not under"):
        parse_topic("zigbee2mqtt/door")
    with pytest.raises(TopicError, match="levels"):
        parse_topic("carewatch/v1/s1/gw1")
    with pytest.raises(TopicError, match="unknown channel"):
        parse_topic("carewatch/v1/s1/gw1/cmd")
    with pytest.raises(TopicError, match="site"):
        parse_topic("carewatch/v1/+/gw1/events")
    assert parse_topic("carewatch/v1/s1/gw1/events") == ParsedTopic("s1", "events", gateway="gw1")


def test_reserved_and_invalid_levels_are_refused() -> None:
    with pytest.raises(TopicError, match="reserved"):
        events_topic("s1", "alerts")
    for bad in ("a/b", "+", "#", "", "x" * 65):
        with pytest.raises(TopicError):
            events_topic("s1", bad)


def test_subscriptions_match_what_they_should() -> None:
    assert matches(subscription("events"), events_topic("s1", "gw1"))
    assert not matches(subscription("events"), status_topic("s1", "gw1"))
    assert matches(subscription("acks", site="s1"), ack_topic("s1", "a"))
    assert not matches(subscription("acks", site="s1"), ack_topic("s2", "a"))
    assert matches("carewatch/#", "carewatch")
    assert matches("a/+/c", "a/b/c") and not matches("a/+/c", "a/b/c/d")
    assert not matches("a/b", "a")


@given(st.text(max_size=80))
def test_parse_only_raises_topic_error(topic: str) -> None:
    with contextlib.suppress(TopicError):
        parse_topic(topic)
