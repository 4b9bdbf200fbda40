"""Prometheus metrics of the stream processor (served on ``/metrics`` by :mod:`stream.api`).

Counters are updated as things happen; gauges that describe stored state (alerts by
state, outbox and telemetry backlogs, gateways online) are read from the state store at
scrape time, so they are right after a restart too. Each processor has its own
registry (tests run several in one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.state import StateStore

PREFIX = "carewatch_stream"


class StoreCollector(Collector):
    """Gauges computed from the state store when scraped."""

    def __init__(self, store: StateStore, now: Callable[[], int]) -> None:
        self.store = store
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        alerts = GaugeMetricFamily(
            f"{PREFIX}_alerts", "Alerts by state and severity (resolved: all kept)",
            labels=["state", "severity"],
        )  # fmt: skip
        for (state, severity), n in sorted(self.store.alert_counts().items()):
            alerts.add_metric([state, severity], n)
        yield alerts
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox", "Notification outbox rows by status", labels=["status"]
        )
        counts = self.store.outbox_counts()
        for status in ("pending", "sent", "failed"):
            outbox.add_metric([status], counts.get(status, 0))
        yield outbox
        lines, oldest = self.store.spool_backlog()
        yield GaugeMetricFamily(
            f"{PREFIX}_influx_backlog_lines", "Telemetry lines waiting for InfluxDB", value=lines
        )
        age = 0.0 if oldest is None else max(0.0, (self.now() - oldest) / 1000)
        yield GaugeMetricFamily(
            f"{PREFIX}_influx_backlog_age_seconds",
            "Age of the oldest telemetry line waiting for InfluxDB",
            value=age,
        )
        online = GaugeMetricFamily(
            f"{PREFIX}_gateways", "Known gateways by status", labels=["status"]
        )
        tally = {"online": 0, "offline": 0, "unknown": 0}
        for g in self.store.gateways():
            key = "unknown" if g.online is None else ("online" if g.online else "offline")
            tally[key] += 1
        for status, n in tally.items():
            online.add_metric([status], n)
        yield online


class Metrics:
    """The processor's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            f"{PREFIX}_messages", "MQTT messages received", ["channel"], registry=r
        )
        self.events = Counter(
            f"{PREFIX}_events",
            "Events received, by outcome (accepted, duplicate, late)",
            ["outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Malformed input set aside", ["reason"], registry=r
        )
        self.seq_missing = Counter(
            f"{PREFIX}_seq_gaps", "Sequence numbers found missing when they were skipped",
            registry=r,
        )  # fmt: skip
        self.seq_lost = Counter(
            f"{PREFIX}_seq_lost", "Sequence numbers given up (never arrived)", registry=r
        )
        self.seq_resets = Counter(
            f"{PREFIX}_seq_resets", "Gateways whose numbering restarted", registry=r
        )
        self.transitions = Counter(
            f"{PREFIX}_alert_transitions", "Alert transitions", ["kind"], registry=r
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications",
            "Notification delivery attempts by notifier and outcome (sent, retry, failed)",
            ["notifier", "outcome"],
            registry=r,
        )
        self.notifier_failures = Counter(
            f"{PREFIX}_notifier_failures",
            "Failed delivery attempts (retried or given up)",
            ["notifier"],
            registry=r,
        )
        self.detector_errors = Counter(
            f"{PREFIX}_detector_errors", "Detector exceptions", ["detector"], registry=r
        )
        self.internal_errors = Counter(
            f"{PREFIX}_internal_errors",
            "Failures contained to one signal, alert or partition (a bug or an unreadable"
            " stored row), by where (signal, alert_timer, detector_timer)",
            ["where"],
            registry=r,
        )
        self.loop_errors = Counter(
            f"{PREFIX}_loop_errors",
            "State database failures a runtime loop retried with backoff, by loop",
            ["loop"],
            registry=r,
        )
        self.loop_failing = Gauge(
            f"{PREFIX}_loop_failing_seconds",
            "How long a runtime loop's state database has been failing (0: working), by loop",
            ["loop"],
            registry=r,
        )
        #: Per loop, while its state database fails: since when (``time.monotonic()``),
        #: failures in a row and the last error (for /health); a working loop is absent.
        self.loops_failing: dict[str, dict[str, Any]] = {}
        self.acks = Counter(
            f"{PREFIX}_acks", "Responder actions by source and outcome", ["source", "outcome"],
            registry=r,
        )  # fmt: skip
        self.influx_writes = Counter(
            f"{PREFIX}_influx_writes", "InfluxDB write attempts by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.influx_lines = Counter(
            f"{PREFIX}_influx_lines_written", "Telemetry lines written to InfluxDB", registry=r
        )
        self.influx_dropped = Counter(
            f"{PREFIX}_influx_lines_dropped",
            "Telemetry lines dropped (spool full, or rejected by InfluxDB)",
            ["reason"],
            registry=r,
        )
        self.lag = Gauge(
            f"{PREFIX}_lag_seconds",
            "Processing time minus gateway receive time of the newest event batch",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            f"{PREFIX}_mqtt_connected", "1 while connected to the central broker", registry=r
        )

    def failing_loops(self) -> dict[str, dict[str, Any]]:
        """The loops failing now: for how long (s), failures in a row, the last error."""
        now = time.monotonic()
        return {
            loop: {
                "failing_for_s": round(now - status["since_monotonic"], 1),
                "failures": status["failures"],
                "last_error": status["last_error"],
            }
            for loop, status in sorted(self.loops_failing.items())
        }

    def watch_store(self, store: StateStore, now: Callable[[], int]) -> None:
        """Add the scrape-time gauges of ``store``."""
        self.registry.register(StoreCollector(store, now))

    def exposition(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: Any) -> float:
        """A sample's current value (tests)."""
        found = self.registry.get_sample_value(name, labels or None)
        return 0.0 if found is None else float(found)
