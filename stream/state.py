"""The stream processor's durable state, in one SQLite database (WAL mode).

Everything that must survive a restart lives here, and everything one input causes is
written in ONE transaction: the sequence number marked seen, the detector partitions'
new states and deadlines, the alert transitions, the notification intents (outbox) and
the telemetry points (spool). The MQTT message is acknowledged only after that
transaction commits, so a crash at any moment either loses nothing (the broker
redelivers, the dedup drops what was already done) or did everything.

Tables:

- ``partitions``: detector partition states (msgspec JSON) and each one's next deadline
  (the timers index: a restart finds the deadlines that passed while it was down);
- ``gateways``: per (site, gateway) dedup window (:mod:`stream.dedup`), event-time
  watermark, online status and device health seen last, counters. Gateway ids are
  unique within a site only (topics are ``{site}/{gateway}/...``): two sites may both
  have a ``gw-1``, and they must not share sequence numbers;
- ``dead_letters``: malformed input with the reason, bounded;
- ``alerts`` / ``transitions``: the alert lifecycle; at most one open alert per dedup
  key (a unique partial index enforces it);
- ``outbox``: one row per (alert transition, recipient, notifier), drained by the sender;
- ``silences`` / ``absences``: maintenance windows and residents' known absences;
- ``telemetry``: InfluxDB line-protocol batches waiting to be written (the spool).

The store is used from one thread (the runtime's event loop); calls are short.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from stream.dedup import DEFAULT_WINDOW, SeqWindow

# 2: gateways keyed by (site, gateway): gateway ids are unique within a site only.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
    detector TEXT NOT NULL,
    key TEXT NOT NULL,
    state BLOB NOT NULL,
    deadline INTEGER,
    updated INTEGER NOT NULL,
    PRIMARY KEY (detector, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS partitions_deadline ON partitions (deadline)
    WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seqs TEXT NOT NULL,
    max_time INTEGER NOT NULL DEFAULT 0,
    online INTEGER,
    status_at INTEGER,
    devices TEXT NOT NULL DEFAULT '{}',
    events INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    resets INTEGER NOT NULL DEFAULT 0,
    late INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, gateway)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    next_action_at INTEGER,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key ON alerts (key) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_next ON alerts (next_action_at)
    WHERE next_action_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, site);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    by TEXT,
    source TEXT,
    note TEXT,
    UNIQUE (alert_id, n)
);
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL,
    notifier TEXT NOT NULL,
    recipient TEXT NOT NULL,
    payload BLOB NOT NULL,
    created INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (notifier, recipient, alert_id, n)
    WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    device TEXT,
    resident TEXT,
    condition TEXT,
    starts INTEGER NOT NULL,
    ends INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS absences (
    id TEXT PRIMARY KEY,
    resident TEXT NOT NULL,
    starts INTEGER NOT NULL,
    ends INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS absences_resident ON absences (resident, starts);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created INTEGER NOT NULL,
    count INTEGER NOT NULL,
    lines TEXT NOT NULL
);
"""


class StateError(Exception):
    """The state database cannot be used (wrong schema version, not a database...)."""


def database_failure(exc: BaseException) -> bool:
    """True for an SQLite error about the database itself (locked, I/O, disk full,
    corrupt), not about one row: the whole unit of work must fail and be retried rather
    than the row be skipped. A constraint violation is about one row."""
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError)


# --- records ------------------------------------------------------------------------------


class AlertRecord(msgspec.Struct, kw_only=True):
    """One alert, as stored and as shown to responders (API, MQTT, webhooks)."""

    id: str
    key: str
    site: str
    condition: str
    subject: str
    state: str  # raised | acknowledged | resolved
    severity: str
    audience: str
    reason: str
    raised_at: int  # when the runtime raised it (its clock), ms UTC
    updated_at: int
    signal_time: int  # when the detector observed the condition (event time)
    resident: str | None = None
    device: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    count: int = 1  # how many raise signals it absorbed
    transitions: int = 0  # number of the last transition
    tier: int = -1  # escalation tier reached (-1: nobody paged yet)
    notified: list[str] = msgspec.field(default_factory=list)  # recipients paged so far
    silenced: bool = False
    acked_at: int | None = None
    acked_by: str | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    note: str | None = None
    # timers (ms UTC; None = not armed)
    page_at: int | None = None  # first page deferred (quiet hours, silence) until then
    escalate_at: int | None = None
    remind_at: int | None = None
    # Timers that fell due during a silence keep their due times and wait until then
    # (the silence's end); deleting the silence releases them at once.
    held_until: int | None = None

    @property
    def open(self) -> bool:
        """Raised or acknowledged."""
        return self.state != "resolved"

    def next_action_at(self) -> int | None:
        """When the alert manager must look at this alert next (None: never)."""
        armed = [t for t in (self.page_at, self.escalate_at, self.remind_at) if t is not None]
        if not armed:
            return None
        first = min(armed)
        return first if self.held_until is None else max(first, self.held_until)


@dataclass(slots=True)
class GatewayRecord:
    """What the processor knows about one gateway."""

    gateway: str
    site: str
    seqs: SeqWindow
    max_time: int = 0
    online: bool | None = None
    status_at: int | None = None
    devices: dict[str, bool] | None = None
    events: int = 0
    duplicates: int = 0
    lost: int = 0
    resets: int = 0
    late: int = 0
    last_seen: int = 0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification intent."""

    n: int
    id: str
    alert_id: str
    notifier: str
    recipient: str
    payload: bytes
    created: int
    status: str
    attempts: int
    next_attempt_at: int
    sent_at: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Silence:
    """A maintenance window: matching alerts page nobody until ``ends``."""

    id: str
    site: str
    starts: int
    ends: int
    created_by: str
    created_at: int
    device: str | None = None
    resident: str | None = None
    condition: str | None = None
    comment: str = ""

    def matches(self, alert: AlertRecord, at_ms: int) -> bool:
        """True when this silence covers ``alert`` at ``at_ms``."""
        return (
            self.starts <= at_ms < self.ends
            and self.site == alert.site
            and (self.device is None or self.device == alert.device)
            and (self.resident is None or self.resident == alert.resident)
            and (self.condition is None or self.condition == alert.condition)
        )


@dataclass(frozen=True, slots=True)
class Absence:
    """A resident known to be away (hospital stay, travel)."""

    id: str
    resident: str
    starts: int
    ends: int
    reason: str
    created_by: str
    created_at: int
    comment: str = ""


_alert_encoder = msgspec.json.Encoder()
_alert_decoder = msgspec.json.Decoder(AlertRecord)


class StateStore:
    """The SQLite state of one stream processor (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        dedup_window: int = DEFAULT_WINDOW,
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous={synchronous!r} (allowed: full, normal)")
        self.path = str(path)
        self._lock_fd: int | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        self.dedup_window = dedup_window
        # isolation_level=None: no implicit transactions; :meth:`transaction` is explicit.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL survives power loss too; NORMAL survives a killed process (WAL on disk).
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StateError(f"{self.path}: cannot use as the state database: {exc}") from exc
        self._in_tx = False
        self._savepoints = 0

    def _lock(self) -> None:
        # Two processors on one database would both consume the broker session and
        # fight over it: refuse the second. The OS drops the lock when a process dies.
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StateError(
                f"{self.path}: in use by another stream processor (lock {lock_path})"
            ) from None
        self._lock_fd = fd

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StateError(
                f"{self.path}: schema version {row[0]}, this carewatch expects {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back in) and release the lock."""
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of effects: committed as a whole or not at all."""
        if self._in_tx:
            raise RuntimeError("nested StateStore.transaction")
        # BEGIN can fail (database locked by another process): then no transaction is
        # open, and the next attempt must not be refused as nested.
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed (I/O error): a transaction left open would
            # make every later BEGIN fail.
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        finally:
            self._in_tx = False

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the current transaction that can fail alone: on an exception its
        writes are undone (the rest of the transaction stays) and the exception goes on."""
        if not self._in_tx:
            raise RuntimeError("StateStore.savepoint outside a transaction")
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
            raise
        else:
            self.db.execute(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    # --- detector partitions --------------------------------------------------------------
    def get_partition(self, detector: str, key: str) -> bytes | None:
        """A partition's stored state (msgspec JSON), None when never seen."""
        row = self.db.execute(
            "SELECT state FROM partitions WHERE detector=? AND key=?", (detector, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put_partition(
        self, detector: str, key: str, state: bytes, deadline: int | None, now: int
    ) -> None:
        """Store a partition's state and its next deadline (None: no timer)."""
        self.db.execute(
            "INSERT INTO partitions (detector, key, state, deadline, updated) VALUES (?,?,?,?,?)"
            " ON CONFLICT (detector, key) DO UPDATE SET state=excluded.state,"
            " deadline=excluded.deadline, updated=excluded.updated",
            (detector, key, state, deadline, now),
        )

    def due_partitions(self, now: int, limit: int = 500) -> list[tuple[str, str, int]]:
        """(detector, key, deadline) of partitions whose deadline is at or before ``now``."""
        rows = self.db.execute(
            "SELECT detector, key, deadline FROM partitions WHERE deadline IS NOT NULL"
            " AND deadline <= ? ORDER BY deadline LIMIT ?",
            (now, limit),
        ).fetchall()
        return [(str(d), str(k), int(t)) for d, k, t in rows]

    def delete_partition(self, detector: str, key: str) -> None:
        """Forget a partition, state and timer (the detector says it expired)."""
        self.db.execute("DELETE FROM partitions WHERE detector=? AND key=?", (detector, key))

    def disarm_partition(self, detector: str, key: str) -> None:
        """Drop a partition's timer, keeping its state (its tick keeps failing)."""
        self.db.execute(
            "UPDATE partitions SET deadline=NULL WHERE detector=? AND key=?", (detector, key)
        )

    def next_partition_deadline(self) -> int | None:
        """Earliest armed partition deadline."""
        row = self.db.execute(
            "SELECT MIN(deadline) FROM partitions WHERE deadline IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def partitions(self, detector: str) -> list[tuple[str, bytes, int | None]]:
        """All partitions of one detector (tests, debugging)."""
        rows = self.db.execute(
            "SELECT key, state, deadline FROM partitions WHERE detector=? ORDER BY key",
            (detector,),
        ).fetchall()
        return [(str(k), bytes(s), d) for k, s, d in rows]

    # --- gateways -------------------------------------------------------------------------
    def get_gateway(self, gateway: str, site: str) -> GatewayRecord:
        """The record of gateway ``gateway`` of ``site``; a fresh one (not stored yet)
        when never seen."""
        row = self.db.execute(
            "SELECT site, seqs, max_time, online, status_at, devices, events, duplicates,"
            " lost, resets, late, last_seen FROM gateways WHERE site=? AND gateway=?",
            (site, gateway),
        ).fetchone()
        if row is None:
            return GatewayRecord(gateway, site, SeqWindow(window=self.dedup_window))
        return GatewayRecord(
            gateway=gateway,
            site=str(row[0]),
            seqs=SeqWindow.load(json.loads(row[1]), window=self.dedup_window),
            max_time=int(row[2]),
            online=None if row[3] is None else bool(row[3]),
            status_at=row[4],
            devices={str(k): bool(v) for k, v in json.loads(row[5]).items()},
            events=int(row[6]),
            duplicates=int(row[7]),
            lost=int(row[8]),
            resets=int(row[9]),
            late=int(row[10]),
            last_seen=int(row[11]),
        )

    def put_gateway(self, g: GatewayRecord) -> None:
        """Store a gateway's record."""
        self.db.execute(
            "INSERT INTO gateways (gateway, site, seqs, max_time, online, status_at, devices,"
            " events, duplicates, lost, resets, late, last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (site, gateway) DO UPDATE SET seqs=excluded.seqs,"
            " max_time=excluded.max_time, online=excluded.online, status_at=excluded.status_at,"
            " devices=excluded.devices, events=excluded.events, duplicates=excluded.duplicates,"
            " lost=excluded.lost, resets=excluded.resets, late=excluded.late,"
            " last_seen=excluded.last_seen",
            (
                g.gateway,
                g.site,
                json.dumps(g.seqs.dump()),
                g.max_time,
                None if g.online is None else int(g.online),
                g.status_at,
                json.dumps(g.devices or {}),
                g.events,
                g.duplicates,
                g.lost,
                g.resets,
                g.late,
                g.last_seen,
            ),
        )

    def gateways(self) -> list[GatewayRecord]:
        """Every known gateway."""
        keys = self.db.execute("SELECT gateway, site FROM gateways ORDER BY site, gateway")
        return [self.get_gateway(str(g), str(s)) for g, s in keys.fetchall()]

    # --- dead letters ---------------------------------------------------------------------
    def add_dead_letter(
        self, at: int, topic: str, reason: str, payload: bytes, keep: int = 10_000
    ) -> None:
        """Set malformed input aside with the reason; only the newest ``keep`` are kept."""
        self.db.execute(
            "INSERT INTO dead_letters (at, topic, reason, payload) VALUES (?,?,?,?)",
            (at, topic, reason[:2000], payload[:65536]),
        )
        self.db.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?",
            (keep,),
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest dead letters first."""
        rows = self.db.execute(
            "SELECT id, at, topic, reason, payload FROM dead_letters ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "id": i,
                "at": at,
                "topic": topic,
                "reason": reason,
                "payload": bytes(p).decode("utf-8", "replace"),
            }
            for i, at, topic, reason, p in rows
        ]

    # --- alerts ---------------------------------------------------------------------------
    def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace an alert (enforces one open alert per key)."""
        self.db.execute(
            "INSERT INTO alerts (id, key, site, state, next_action_at, body) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET state=excluded.state,"
            " next_action_at=excluded.next_action_at, body=excluded.body",
            (
                alert.id,
                alert.key,
                alert.site,
                alert.state,
                alert.next_action_at() if alert.open else None,
                _alert_encoder.encode(alert),
            ),
        )

    def get_alert(self, alert_id: str) -> AlertRecord | None:
        """One alert by id."""
        row = self.db.execute("SELECT body FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return None if row is None else _alert_decoder.decode(row[0])

    def open_alert(self, key: str) -> AlertRecord | None:
        """The open (raised or acknowledged) alert of a dedup key."""
        row = self.db.execute(
            "SELECT body FROM alerts WHERE key=? AND state != 'resolved'", (key,)
        ).fetchone()
        return None if row is None else _alert_decoder.decode(row[0])

    def alerts(
        self,
        *,
        states: Sequence[str] | None = None,
        site: str | None = None,
        limit: int = 500,
    ) -> list[AlertRecord]:
        """Alerts, newest first, filtered by state(s) and site."""
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += list(states)
        if site is not None:
            where.append("site=?")
            args.append(site)
        sql = "SELECT body FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC LIMIT ?"
        args.append(limit)
        return [_alert_decoder.decode(r[0]) for r in self.db.execute(sql, args)]

    def open_alerts(self) -> list[AlertRecord]:
        """Every open alert."""
        return self.alerts(states=("raised", "acknowledged"), limit=1_000_000)

    def due_alerts(self, now: int, limit: int = 500) -> list[AlertRecord]:
        """Open alerts with a timer at or before ``now``."""
        rows = self.db.execute(
            "SELECT body FROM alerts WHERE next_action_at IS NOT NULL AND next_action_at <= ?"
            " ORDER BY next_action_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_alert_decoder.decode(r[0]) for r in rows]

    def due_alert_rows(self, now: int, limit: int = 500) -> list[tuple[str, bytes]]:
        """(id, stored body) of open alerts with a timer at or before ``now``; the caller
        decodes each one, so one unreadable row cannot stop the others."""
        rows = self.db.execute(
            "SELECT id, body FROM alerts WHERE next_action_at IS NOT NULL AND next_action_at <= ?"
            " ORDER BY next_action_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [(str(i), bytes(b)) for i, b in rows]

    def postpone_alert(self, alert_id: str, at: int) -> None:
        """Move an alert's next timer to ``at`` without touching its body (a failing row)."""
        self.db.execute("UPDATE alerts SET next_action_at=? WHERE id=?", (at, alert_id))

    def next_alert_deadline(self) -> int | None:
        """Earliest armed alert timer."""
        row = self.db.execute(
            "SELECT MIN(next_action_at) FROM alerts WHERE next_action_at IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """(state, severity) -> number of alerts, for metrics (resolved included)."""
        out: dict[tuple[str, str], int] = {}
        rows = self.db.execute("SELECT state, body FROM alerts WHERE state != 'resolved'")
        for state, body in rows:
            severity = _alert_decoder.decode(body).severity
            out[(state, severity)] = out.get((state, severity), 0) + 1
        (resolved,) = self.db.execute(
            "SELECT COUNT(*) FROM alerts WHERE state='resolved'"
        ).fetchone()
        out[("resolved", "all")] = int(resolved)
        return out

    def add_transition(
        self,
        alert_id: str,
        n: int,
        kind: str,
        at: int,
        *,
        by: str | None = None,
        source: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record one lifecycle transition (the audit trail)."""
        self.db.execute(
            "INSERT INTO transitions (alert_id, n, kind, at, by, source, note)"
            " VALUES (?,?,?,?,?,?,?)",
            (alert_id, n, kind, at, by, source, note),
        )

    def transitions(self, alert_id: str) -> list[dict[str, Any]]:
        """An alert's transitions, oldest first."""
        rows = self.db.execute(
            "SELECT n, kind, at, by, source, note FROM transitions WHERE alert_id=? ORDER BY n",
            (alert_id,),
        ).fetchall()
        return [
            {"n": n, "kind": kind, "at": at, "by": by, "source": source, "note": note}
            for n, kind, at, by, source, note in rows
        ]

    # --- outbox ---------------------------------------------------------------------------
    def add_outbox(self, rows: Iterable[tuple[str, str, str, str, bytes]], now: int) -> int:
        """Queue notifications: (id, alert_id, notifier, recipient, payload). Returns count.

        An id already present is ignored: intents are idempotent.
        """
        cur = self.db.executemany(
            "INSERT OR IGNORE INTO outbox (id, alert_id, notifier, recipient, payload, created,"
            " next_attempt_at) VALUES (?,?,?,?,?,?,?)",
            [(i, a, n, r, p, now, now) for i, a, n, r, p in rows],
        )
        return cur.rowcount

    def outbox_heads(self, now: int, limit: int = 100) -> list[OutboxRow]:
        """The oldest pending row of each (notifier, recipient, alert) that is due now.

        Later rows of the same queue wait behind it, so a receiver sees one alert's
        transitions in order (raised before acknowledged) even across retries, while
        different alerts do not wait for each other.
        """
        rows = self.db.execute(
            "SELECT n, id, alert_id, notifier, recipient, payload, created, status, attempts,"
            " next_attempt_at, sent_at, last_error FROM outbox WHERE n IN ("
            "  SELECT MIN(n) FROM outbox WHERE status='pending'"
            "  GROUP BY notifier, recipient, alert_id)"
            " AND next_attempt_at <= ? ORDER BY n LIMIT ?",
            (now, limit),
        ).fetchall()
        return [_outbox_row(r) for r in rows]

    def next_outbox_attempt(self) -> int | None:
        """When the next pending head row is due."""
        row = self.db.execute(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE n IN ("
            " SELECT MIN(n) FROM outbox WHERE status='pending'"
            " GROUP BY notifier, recipient, alert_id)"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def retry_now(self, notifier: str, now: int) -> int:
        """Make a notifier's waiting rows due at once (its channel came back)."""
        return self.db.execute(
            "UPDATE outbox SET next_attempt_at=? WHERE status='pending' AND notifier=?"
            " AND next_attempt_at > ?",
            (now, notifier, now),
        ).rowcount

    def mark_sent(self, outbox_id: str, now: int) -> None:
        """A notification was delivered."""
        self.db.execute(
            "UPDATE outbox SET status='sent', sent_at=?, attempts=attempts+1 WHERE id=?",
            (now, outbox_id),
        )

    def mark_retry(self, outbox_id: str, next_at: int, error: str) -> None:
        """A delivery failed and will be tried again at ``next_at``."""
        self.db.execute(
            "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
            (next_at, error[:1000], outbox_id),
        )

    def mark_failed(self, outbox_id: str, now: int, error: str) -> None:
        """A delivery is given up (permanent error or attempts exhausted)."""
        self.db.execute(
            "UPDATE outbox SET status='failed', attempts=attempts+1, sent_at=?, last_error=?"
            " WHERE id=?",
            (now, error[:1000], outbox_id),
        )

    def outbox(self, status: str | None = None, limit: int = 10_000) -> list[OutboxRow]:
        """Outbox rows, oldest first (tests, API)."""
        sql = (
            "SELECT n, id, alert_id, notifier, recipient, payload, created, status, attempts,"
            " next_attempt_at, sent_at, last_error FROM outbox"
        )
        args: list[Any] = []
        if status is not None:
            sql += " WHERE status=?"
            args.append(status)
        sql += " ORDER BY n LIMIT ?"
        args.append(limit)
        return [_outbox_row(r) for r in self.db.execute(sql, args)]

    def outbox_counts(self) -> dict[str, int]:
        """status -> rows."""
        return {
            str(s): int(c)
            for s, c in self.db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        }

    # --- silences -------------------------------------------------------------------------
    def put_silence(self, s: Silence) -> None:
        """Create or replace a silence."""
        self.db.execute(
            "INSERT OR REPLACE INTO silences (id, site, device, resident, condition, starts,"
            " ends, created_by, created_at, comment) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                s.id,
                s.site,
                s.device,
                s.resident,
                s.condition,
                s.starts,
                s.ends,
                s.created_by,
                s.created_at,
                s.comment,
            ),
        )

    def delete_silence(self, silence_id: str) -> bool:
        """Remove a silence; False when there was none."""
        return self.db.execute("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount > 0

    def silences(self, *, active_at: int | None = None, site: str | None = None) -> list[Silence]:
        """Silences (those not expired at ``active_at`` when given), by start time."""
        sql = (
            "SELECT id, site, starts, ends, created_by, created_at, device, resident,"
            " condition, comment FROM silences WHERE 1=1"
        )
        args: list[Any] = []
        if active_at is not None:
            sql += " AND ends > ?"
            args.append(active_at)
        if site is not None:
            sql += " AND site=?"
            args.append(site)
        sql += " ORDER BY starts, id"
        return [Silence(*row) for row in self.db.execute(sql, args)]

    def prune_silences(self, now: int) -> int:
        """Delete expired silences."""
        return self.db.execute("DELETE FROM silences WHERE ends <= ?", (now,)).rowcount

    # --- absences -------------------------------------------------------------------------
    def put_absence(self, a: Absence) -> None:
        """Create or replace an absence."""
        self.db.execute(
            "INSERT OR REPLACE INTO absences (id, resident, starts, ends, reason, created_by,"
            " created_at, comment) VALUES (?,?,?,?,?,?,?,?)",
            (a.id, a.resident, a.starts, a.ends, a.reason, a.created_by, a.created_at, a.comment),
        )

    def delete_absence(self, absence_id: str) -> bool:
        """Remove an absence; False when there was none."""
        return self.db.execute("DELETE FROM absences WHERE id=?", (absence_id,)).rowcount > 0

    def absences(self, resident: str | None = None) -> list[Absence]:
        """Recorded absences, by start time."""
        sql = (
            "SELECT id, resident, starts, ends, reason, created_by, created_at, comment"
            " FROM absences"
        )
        args: list[Any] = []
        if resident is not None:
            sql += " WHERE resident=?"
            args.append(resident)
        sql += " ORDER BY starts, id"
        return [Absence(*row) for row in self.db.execute(sql, args)]

    def is_absent(self, resident: str, at_ms: int) -> bool:
        """True when a recorded absence covers ``at_ms``."""
        row = self.db.execute(
            "SELECT 1 FROM absences WHERE resident=? AND starts <= ? AND ends > ? LIMIT 1",
            (resident, at_ms, at_ms),
        ).fetchone()
        return row is not None

    # --- telemetry spool ------------------------------------------------------------------
    def spool_add(self, lines: Sequence[str], now: int) -> None:
        """Queue InfluxDB line-protocol lines (one row per batch)."""
        if lines:
            self.db.execute(
                "INSERT INTO telemetry (created, count, lines) VALUES (?,?,?)",
                (now, len(lines), "\n".join(lines)),
            )

    def spool_take(self, max_lines: int) -> tuple[list[int], list[str]]:
        """The oldest queued batches, up to about ``max_lines`` lines (at least one batch)."""
        ids: list[int] = []
        lines: list[str] = []
        for row_id, _count, text in self.db.execute(
            "SELECT id, count, lines FROM telemetry ORDER BY id LIMIT 1000"
        ):
            batch = str(text).split("\n")
            if ids and len(lines) + len(batch) > max_lines:
                break
            ids.append(int(row_id))
            lines += batch
        return ids, lines

    def spool_delete(self, ids: Sequence[int]) -> None:
        """Forget batches that were written."""
        self.db.executemany("DELETE FROM telemetry WHERE id=?", [(i,) for i in ids])

    def spool_backlog(self) -> tuple[int, int | None]:
        """(lines queued, creation time of the oldest batch)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(count), 0), MIN(created) FROM telemetry"
        ).fetchone()
        return int(row[0]), row[1]

    def spool_trim(self, max_lines: int) -> int:
        """Drop the oldest batches beyond ``max_lines`` queued lines; returns lines dropped."""
        total, _ = self.spool_backlog()
        dropped = 0
        while total - dropped > max_lines:
            row = self.db.execute("SELECT id, count FROM telemetry ORDER BY id LIMIT 1").fetchone()
            if row is None:
                break
            self.db.execute("DELETE FROM telemetry WHERE id=?", (row[0],))
            dropped += int(row[1])
        return dropped

    # --- housekeeping ---------------------------------------------------------------------
    def prune(self, before: int) -> dict[str, int]:
        """Delete resolved alerts, their transitions and finished notifications older
        than ``before`` (ms UTC)."""
        out: dict[str, int] = {}
        old = [
            r[0]
            for r in self.db.execute("SELECT id, body FROM alerts WHERE state='resolved'")
            if (_alert_decoder.decode(r[1]).resolved_at or 0) < before
        ]
        self.db.executemany("DELETE FROM transitions WHERE alert_id=?", [(a,) for a in old])
        self.db.executemany("DELETE FROM alerts WHERE id=?", [(a,) for a in old])
        out["alerts"] = len(old)
        out["outbox"] = self.db.execute(
            "DELETE FROM outbox WHERE status != 'pending' AND COALESCE(sent_at, created) < ?",
            (before,),
        ).rowcount
        out["absences"] = self.db.execute("DELETE FROM absences WHERE ends < ?", (before,)).rowcount
        return out


def _outbox_row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        n=int(r[0]),
        id=str(r[1]),
        alert_id=str(r[2]),
        notifier=str(r[3]),
        recipient=str(r[4]),
        payload=bytes(r[5]),
        created=int(r[6]),
        status=str(r[7]),
        attempts=int(r[8]),
        next_attempt_at=int(r[9]),
        sent_at=r[10],
        last_error=r[11],
    )
