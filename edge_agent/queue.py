"""The durable event queue of a gateway: SQLite in WAL mode, one file on local disk.

Contract (also in docs/edge_queue.md)
-------------------------------------
- **Received means on disk.** An Event exists once the transaction that inserted it has
  committed. Its sequence number is taken from the same transaction (``meta.next_seq``
  is updated with the insert), so a seq is never handed out twice, not even across a
  crash or a power cut.
- **Durability.** ``journal_mode=WAL`` with ``synchronous=FULL``: every commit is
  fsync'ed before it returns. ``NORMAL`` would keep the file consistent after a power
  cut but may lose the last commits, and with them the advance of ``next_seq``: events
  already published (and deleted after their PUBACK) would then see their seqs handed
  out again, and the processor would drop the new events as duplicates. Losing data
  silently is worse than an fsync; writes are group-committed (one transaction for
  everything that arrived meanwhile) so the fsync cost is paid per batch, not per event.
- **Priorities.** ``URGENT`` (alarm presses, fall windows), ``NORMAL`` (state changes:
  doors, motion, check-ins, counts) and ``TELEMETRY`` (heartbeats, battery,
  availability: the reading names are configurable). Sending takes urgent events first,
  then the rest oldest first (seq order); urgent events may therefore overtake telemetry,
  and within each class events leave in seq order.
- **Delete after PUBACK.** :meth:`QueueStore.peek` never removes anything;
  :meth:`QueueStore.ack` deletes exactly the seqs of a batch the broker acknowledged.
  Whatever was sent but not acknowledged is sent again after a reconnect or a restart,
  with the same seq (the processor drops the duplicate).
- **Caps.** ``max_bytes`` bounds the stored payload bytes (plus a fixed per-row overhead
  of :data:`ROW_OVERHEAD`), ``max_age_s`` the age of queued events. When an insert
  would pass ``max_bytes``, the oldest ``TELEMETRY`` events are dropped first, then the
  oldest ``NORMAL`` ones; ``URGENT`` events are never dropped: an urgent event is stored
  even over the cap (and counted as ``urgent_over_cap``), and a non-urgent event that
  finds only urgent events is itself dropped. Rows of the commit being written are
  candidates too, so the order holds within one group commit. Expiry by age also spares
  urgent events.
- **Counters.** Every drop is counted by reason (``dropped_full_telemetry``,
  ``dropped_full_normal``, ``dropped_full_new``, ``dropped_expired``,
  ``dropped_invalid``) in the ``counters`` table, in the same transaction as the drop,
  so they survive restarts and are reported in the heartbeat.
- **Codec state and quarantine.** Each device's codec tracking state (counter baselines,
  latched SOS flags) is written in the same transaction as the Events derived from it,
  so a restart neither repeats nor skips a delta. Bad frames are kept in a small
  ``quarantine`` table (newest ``quarantine_max`` rows) with device, fault and detail.

Threading: :class:`QueueStore` is synchronous and single-threaded; :class:`EventQueue`
is the asyncio facade that runs every store call on one dedicated thread, so an fsync on
a slow SD card never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from device_profiles.errors import CarewatchError, ConfigError
from device_profiles.events import Event, Value, decode_event, encode_event

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes charged per queued row on top of its payload (row header, index entry).
ROW_OVERHEAD = 48
#: How many stored site messages are remembered to recognize redeliveries.
SEEN_MAX = 4096
_SCHEMA_VERSION = 1
#: ``meta`` key of the agent clock's stamp at the last commit (see :meth:`QueueStore.append`).
LAST_ISSUED = "clock.last_issued_ms"
_DROP_CHUNK = 512
#: Rows rewritten per transaction when untrusted stamps are corrected.
_CORRECT_CHUNK = 500
#: Waits before each new try of a group commit that failed with an SQLite operational
#: error (locked, I/O, disk full): a passing fault (a busy SD card, another process
#: holding the lock, space freed by the age cap) then costs a delay, not readings that
#: no device will send again. A fault that outlasts them fails the commit.
COMMIT_RETRY_S: tuple[float, ...] = (0.1, 0.4, 1.5)

JsonState = dict[str, Any]


class Priority(IntEnum):
    """Queue priority of an Event (higher is sent first and dropped last)."""

    TELEMETRY = 0
    NORMAL = 1
    URGENT = 2


class QueueError(CarewatchError):
    """The queue file cannot be used (wrong gateway, unreadable, disk error)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """An Event without its seq yet: what a source hands to the queue."""

    device: str
    kind: str
    reading: str
    time: int
    received: int
    values: Mapping[str, Value] = field(default_factory=dict)
    resident: str | None = None
    clock_ok: bool = True
    urgent: bool = False
    priority: Priority = Priority.NORMAL
    #: ``time`` came from the device's own clock (not shifted by a clock correction).
    device_time: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """A draft the queue refused (it would not make a valid Event)."""

    draft: Draft
    reason: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one :meth:`QueueStore.append` did."""

    events: list[Event]
    rejected: list[Rejected]
    dropped: dict[str, int]


@dataclass(frozen=True, slots=True)
class Batch:
    """Queued events ready to publish: their seqs and the encoded batch payload."""

    seqs: tuple[int, ...]
    payload: bytes
    urgent: bool

    @property
    def last(self) -> int:
        """Highest seq in the batch."""
        return self.seqs[-1]

    def __len__(self) -> int:
        return len(self.seqs)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of the queue for the heartbeat and the benchmarks."""

    depth: int
    urgent: int
    bytes: int
    oldest_ms: int | None
    next_seq: int
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A bad frame kept for inspection."""

    time: int
    device: str
    fault: str
    detail: str
    raw: bytes


def batch_payload(payloads: Iterable[bytes]) -> bytes:
    """The ``events`` topic payload from already-encoded Events.

    Byte-for-byte what :func:`device_profiles.events.encode_batch` produces (its
    ``v`` equals the default and is omitted), without decoding and re-encoding.
    """
    return b'{"events":[' + b",".join(payloads) + b"]}"


class QueueStore:
    """The synchronous SQLite store. One instance per file, used from one thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        gateway: str,
        site: str,
        max_bytes: int = 256 * 1024**2,
        max_age_s: float = 7 * 86400.0,
        quarantine_max: int = 200,
        check_same_thread: bool = True,
    ) -> None:
        self.path = Path(path)
        self.gateway = gateway
        self.site = site
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.quarantine_max = quarantine_max
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=check_same_thread
            )
            self._setup()
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"cannot open queue {path}: {exc}") from exc
        self._bytes, self._depth, self._urgent = self._totals()
        self._next_seq = int(self._meta("next_seq") or 1)
        #: This process's run id: untrusted stamps can only be corrected within one run.
        self.run_id = os.urandom(8).hex()

    # -- setup ----------------------------------------------------------------------
    def _setup(self) -> None:
        db = self._db
        # auto_vacuum must be chosen before the first table exists; incremental lets the
        # file shrink after a long outage drained without rewriting it all at once.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal" and str(self.path) != ":memory:":
            raise QueueError(f"cannot switch {self.path} to WAL mode (got {mode})")
        db.execute("PRAGMA synchronous=FULL")  # see the module docstring
        db.execute("PRAGMA journal_size_limit=8388608")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-2048")  # 2 MiB: a gateway has little memory
        with self._tx():
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " seq INTEGER PRIMARY KEY, priority INTEGER NOT NULL,"
                " queued_ms INTEGER NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL,"
                # run + fix: set for events stamped by an untrusted clock in run ``run``;
                # fix 1 = shift ``received`` on correction, 2 = shift ``time`` as well.
                " run TEXT, fix INTEGER)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS events_priority ON events (priority, seq)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY,"
                " value INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS device_state (device TEXT PRIMARY KEY,"
                " state TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS seen_messages (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " digest INTEGER NOT NULL UNIQUE)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " time_ms INTEGER NOT NULL, device TEXT NOT NULL, fault TEXT NOT NULL,"
                " detail TEXT NOT NULL, raw BLOB NOT NULL)"
            )
            version = self._meta("schema")
            if version is None:
                self._set_meta("schema", str(_SCHEMA_VERSION))
                self._set_meta("gateway", self.gateway)
                self._set_meta("site", self.site)
                self._set_meta("next_seq", "1")
            elif int(version) > _SCHEMA_VERSION:
                raise QueueError(f"{self.path}: queue schema {version} is newer than this agent")
        owner = (self._meta("site"), self._meta("gateway"))
        if owner != (self.site, self.gateway):
            raise ConfigError(
                f"the queue belongs to site {owner[0]!r} gateway {owner[1]!r}, not "
                f"{self.site!r}/{self.gateway!r}: let it drain under its own id or point "
                "queue.path to a new file",
                file=str(self.path),
                path="queue.path",
            )

    @contextlib.contextmanager
    def _tx(self) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except BaseException:
            # A COMMIT failing on I/O or a full disk may leave the transaction open:
            # end it, or every later write would fail ("transaction within a transaction").
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _totals(self) -> tuple[int, int, int]:
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(priority = 2), 0) FROM events"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def _bump(self, counters: Mapping[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counters.items() if v],
        )

    # -- writing --------------------------------------------------------------------
    def append(
        self,
        drafts: Sequence[Draft],
        states: Mapping[str, JsonState] | None = None,
        *,
        counters: Mapping[str, int] | None = None,
        quarantine: Sequence[QuarantineEntry] = (),
        now_ms: int | None = None,
        seen: Sequence[int] = (),
    ) -> AppendResult:
        """Store drafts as Events with the next seqs, in ONE transaction.

        ``states`` (device -> codec state), ``counters`` (name -> increment),
        ``quarantine`` entries and ``seen`` (digests of the site messages these events
        came from, see :meth:`seen_digests`) are written in the same transaction, so
        they are exactly as durable as the Events derived alongside them. A given
        ``now_ms`` (the agent clock's stamp, later than every stamp of these events) is
        kept as ``meta`` :data:`LAST_ISSUED`, so the next run's clock never stamps an
        event earlier than one already stored.
        """
        try:
            return self._append(drafts, states, counters, quarantine, now_ms, seen)
        except BaseException:
            # Rolled back: the in-memory totals counted rows that are not there.
            try:
                self._bytes, self._depth, self._urgent = self._totals()
            except sqlite3.Error:
                log.error("queue: cannot recount %s after a failed commit", self.path)
            raise

    def note_commit_failed(self, events: int) -> None:
        """Count a failed commit and its lost events, in a transaction of their own
        (the failed one's counters were rolled back with it); log if even that fails."""
        try:
            with self._tx():
                self._bump({"commit_failed": 1, "commit_failed_events": events})
        except sqlite3.Error as exc:
            log.error("queue: cannot count a failed commit (%d events): %s", events, exc)

    def _append(  # noqa: PLR0917 (the arguments of append, in order)
        self,
        drafts: Sequence[Draft],
        states: Mapping[str, JsonState] | None,
        counters: Mapping[str, int] | None,
        quarantine: Sequence[QuarantineEntry],
        now_ms: int | None,
        seen: Sequence[int],
    ) -> AppendResult:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        events: list[Event] = []
        rejected: list[Rejected] = []
        dropped: dict[str, int] = {}
        bumps: dict[str, int] = dict(counters or {})
        with self._tx():
            seq = self._next_seq
            rows: list[tuple[int, int, int, int, bytes, str | None, int | None]] = []
            evicted: set[int] = set()

            def insert_rows() -> None:
                if rows:
                    self._db.executemany(
                        "INSERT INTO events (seq, priority, queued_ms, size, payload, run, fix)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    rows.clear()

            for draft in drafts:
                try:
                    event = Event(
                        gateway=self.gateway,
                        seq=seq,
                        time=draft.time,
                        received=draft.received,
                        site=self.site,
                        device=draft.device,
                        kind=draft.kind,
                        reading=draft.reading,
                        values=dict(draft.values),
                        resident=draft.resident,
                        clock_ok=draft.clock_ok,
                        urgent=draft.urgent,
                    ).checked()
                    payload = encode_event(event)
                except (CarewatchError, TypeError, ValueError) as exc:
                    rejected.append(Rejected(draft, str(exc)))
                    dropped["dropped_invalid"] = dropped.get("dropped_invalid", 0) + 1
                    continue
                size = len(payload) + ROW_OVERHEAD
                prio = Priority.URGENT if draft.urgent else draft.priority
                if self._bytes + size > self.max_bytes:
                    # The rows of this commit must be candidates for eviction too, or a
                    # big commit would drop its newest events (or its normal ones while
                    # keeping its telemetry) instead of the oldest telemetry.
                    insert_rows()
                if not self._make_room(size, prio, dropped, evicted):
                    dropped["dropped_full_new"] = dropped.get("dropped_full_new", 0) + 1
                    continue
                fix = None if draft.clock_ok else (1 if draft.device_time else 2)
                rows.append(
                    (seq, int(prio), now, size, payload, None if fix is None else self.run_id, fix)
                )
                events.append(event)
                self._bytes += size
                self._depth += 1
                if prio == Priority.URGENT:
                    self._urgent += 1
                seq += 1
            insert_rows()
            if evicted:
                events = [e for e in events if e.seq not in evicted]
            if seq != self._next_seq:
                self._set_meta("next_seq", str(seq))
            if now_ms is not None:
                self._set_meta(LAST_ISSUED, str(now_ms))
            if states:
                self._db.executemany(
                    "INSERT OR REPLACE INTO device_state (device, state) VALUES (?, ?)",
                    [(dev, json.dumps(st, separators=(",", ":"))) for dev, st in states.items()],
                )
            for name, n in dropped.items():
                bumps[name] = bumps.get(name, 0) + n
            self._bump(bumps)
            if quarantine:
                self._quarantine(quarantine)
            if seen:
                self._db.executemany(
                    "INSERT OR IGNORE INTO seen_messages (digest) VALUES (?)",
                    [(d,) for d in seen],
                )
                self._db.execute(
                    "DELETE FROM seen_messages WHERE id <= (SELECT MAX(id) FROM seen_messages) - ?",
                    (SEEN_MAX,),
                )
        self._next_seq = seq
        return AppendResult(events, rejected, dropped)

    def _make_room(
        self, size: int, prio: Priority, dropped: dict[str, int], evicted: set[int]
    ) -> bool:
        """Drop old low-priority events until ``size`` more bytes fit (inside a tx).

        The seqs of the dropped rows are added to ``evicted``.
        """
        if self._bytes + size <= self.max_bytes:
            return True
        for victim, reason in (
            (Priority.TELEMETRY, "dropped_full_telemetry"),
            (Priority.NORMAL, "dropped_full_normal"),
        ):
            if victim > prio:
                break  # never drop something more important than the newcomer
            while self._bytes + size > self.max_bytes:
                rows = self._db.execute(
                    "SELECT seq, size FROM events WHERE priority=? ORDER BY seq LIMIT ?",
                    (int(victim), _DROP_CHUNK),
                ).fetchall()
                if not rows:
                    break
                need = self._bytes + size - self.max_bytes
                gone: list[tuple[int]] = []
                for seq, row_size in rows:
                    gone.append((seq,))
                    need -= row_size
                    self._bytes -= row_size
                    self._depth -= 1
                    if need <= 0:
                        break
                self._db.executemany("DELETE FROM events WHERE seq=?", gone)
                evicted.update(s for (s,) in gone)
                dropped[reason] = dropped.get(reason, 0) + len(gone)
            if self._bytes + size <= self.max_bytes:
                return True
        if prio == Priority.URGENT:
            dropped["urgent_over_cap"] = dropped.get("urgent_over_cap", 0) + 1
            return True  # alarms are never dropped, not even over the cap
        return False

    def _quarantine(self, entries: Sequence[QuarantineEntry]) -> None:
        self._db.executemany(
            "INSERT INTO quarantine (time_ms, device, fault, detail, raw) VALUES (?, ?, ?, ?, ?)",
            [(e.time, e.device, e.fault, e.detail[:500], bytes(e.raw[:512])) for e in entries],
        )
        self._db.execute(
            "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
            (self.quarantine_max,),
        )

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged events; returns how many were still queued."""
        keys = list(seqs)
        if not keys:
            return 0
        with self._tx():
            removed = 0
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                row = self._db.execute(
                    f"SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(priority = 2), 0)"
                    f" FROM events WHERE seq IN ({marks})",
                    chunk,
                ).fetchone()
                self._db.execute(f"DELETE FROM events WHERE seq IN ({marks})", chunk)
                self._bytes -= int(row[0])
                self._depth -= int(row[1])
                self._urgent -= int(row[2])
                removed += int(row[1])
            self._bump({"sent": removed})
        return removed

    def expire(self, now_ms: int | None = None) -> int:
        """Drop non-urgent events older than ``max_age_s``; returns how many."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now - int(self.max_age_s * 1000)
        with self._tx():
            row = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM events"
                " WHERE priority < 2 AND queued_ms < ?",
                (cutoff,),
            ).fetchone()
            n = int(row[1])
            if n:
                self._db.execute(
                    "DELETE FROM events WHERE priority < 2 AND queued_ms < ?", (cutoff,)
                )
                self._bytes -= int(row[0])
                self._depth -= n
                self._bump({"dropped_expired": n})
        return n

    def correct_times(self, delta_ms: int, now_ms: int | None = None) -> int:
        """Shift the untrusted stamps of this run by ``delta_ms`` once time is known.

        Only still-queued events stamped in this run by the untrusted clock are
        rewritten (their estimate and the real time differ by exactly ``delta_ms``, up
        to the drift of the monotonic clock); they get ``clock_ok=True``. Their
        ``queued_ms`` (an estimate from the same clock) is shifted too, but never past
        ``now_ms``, so expiry by age and the oldest age stay right. Returns how many
        were corrected.
        """
        cap = (1 << 62) if now_ms is None else now_ms
        corrected = 0
        last = 0
        # In chunks, each its own transaction: a full queue holds far more untrusted rows
        # (payloads plus their re-encoded copies) than a gateway has memory for.
        while True:
            with self._tx():
                rows = self._db.execute(
                    "SELECT seq, size, payload, fix FROM events"
                    " WHERE run = ? AND fix IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?",
                    (self.run_id, last, _CORRECT_CHUNK),
                ).fetchall()
                if not rows:
                    break
                first, last, full = int(rows[0][0]), int(rows[-1][0]), len(rows) == _CORRECT_CHUNK
                self._db.execute(
                    "UPDATE events SET queued_ms = MIN(queued_ms + ?, ?)"
                    " WHERE run = ? AND fix IS NOT NULL AND seq BETWEEN ? AND ?",
                    (delta_ms, cap, self.run_id, first, last),
                )
                updates: list[tuple[bytes, int, int]] = []
                grown = 0
                for seq, size, payload, fix in rows:
                    try:
                        event = decode_event(bytes(payload))
                    except CarewatchError:
                        continue
                    event = msgspec.structs.replace(
                        event,
                        received=event.received + delta_ms,
                        time=event.time + delta_ms if fix == 2 else event.time,
                        clock_ok=True,
                    )
                    try:
                        event.checked()
                    except CarewatchError:
                        continue
                    new = encode_event(event)
                    new_size = len(new) + ROW_OVERHEAD
                    grown += new_size - int(size)
                    updates.append((new, new_size, int(seq)))
                del rows
                self._db.executemany(
                    "UPDATE events SET payload = ?, size = ?, run = NULL, fix = NULL WHERE seq = ?",
                    updates,
                )
                self._bump({"clock_corrected": len(updates)})
            self._bytes += grown  # only once committed
            corrected += len(updates)
            if not full:
                break
        return corrected

    def bump(self, counters: Mapping[str, int]) -> None:
        """Add to persisted counters (outside an append)."""
        with self._tx():
            self._bump(counters)

    def add_quarantine(self, entries: Sequence[QuarantineEntry]) -> None:
        """Keep bad frames (outside an append)."""
        with self._tx():
            self._quarantine(entries)

    def set_meta(self, key: str, value: str) -> None:
        """Persist one small value (e.g. the clock's last trusted time)."""
        with self._tx():
            self._set_meta(key, value)

    def meta(self, key: str) -> str | None:
        """A value stored with :meth:`set_meta`."""
        return self._meta(key)

    def vacuum(self, pages: int = 1000) -> None:
        """Give free pages back to the file system, a little at a time."""
        self._db.execute(f"PRAGMA incremental_vacuum({int(pages)})")

    # -- reading --------------------------------------------------------------------
    def peek(
        self,
        *,
        urgent: bool,
        after: int = 0,
        limit: int = 500,
        max_bytes: int = 256 * 1024,
    ) -> Batch | None:
        """The next batch of one class (urgent, or the rest) with seq > ``after``.

        Nothing is removed; :meth:`ack` does that after the broker's PUBACK.
        """
        if urgent:
            sql = "SELECT seq, payload FROM events WHERE priority = 2 AND seq > ? ORDER BY seq"
        else:
            # Walk the rowid (seq) order: urgent rows are rare, so skipping them is cheap,
            # while the (priority, seq) index would merge two ranges and sort.
            sql = (
                "SELECT seq, payload FROM events NOT INDEXED"
                " WHERE seq > ? AND priority < 2 ORDER BY seq"
            )
        seqs: list[int] = []
        payloads: list[bytes] = []
        total = 12
        for seq, payload in self._db.execute(sql + " LIMIT ?", (after, limit)):
            if payloads and total + len(payload) + 1 > max_bytes:
                break
            seqs.append(int(seq))
            payloads.append(bytes(payload))
            total += len(payload) + 1
        if not seqs:
            return None
        return Batch(tuple(seqs), batch_payload(payloads), urgent)

    def peek_next(
        self, *, after_urgent: int, after: int, limit: int = 500, max_bytes: int = 256 * 1024
    ) -> Batch | None:
        """The next batch to send: urgent events first, else the oldest others."""
        return self.peek(
            urgent=True, after=after_urgent, limit=limit, max_bytes=max_bytes
        ) or self.peek(urgent=False, after=after, limit=limit, max_bytes=max_bytes)

    def states(self) -> dict[str, JsonState]:
        """Every device's persisted codec state."""
        out: dict[str, JsonState] = {}
        for device, text in self._db.execute("SELECT device, state FROM device_state"):
            try:
                out[str(device)] = json.loads(text)
            except ValueError:
                log.warning("%s: stored codec state is unreadable; starting afresh", device)
        return out

    def seen_digests(self) -> list[int]:
        """Digests (packet id + bytes) of the newest stored site messages, oldest first.

        A site broker delivers a QoS 1 message again (flagged DUP, same packet id) when
        it did not get the PUBACK, e.g. when the agent died between storing the events
        and sending it; the MQTT source drops such a message when its digest is here.
        A new message with the same bytes gets another packet id, so it is not.
        """
        return [int(d) for (d,) in self._db.execute("SELECT digest FROM seen_messages ORDER BY id")]

    def counters(self) -> dict[str, int]:
        """All persisted counters."""
        return {str(k): int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}

    def quarantined(self, limit: int = 50) -> list[QuarantineEntry]:
        """The newest quarantined frames, newest first."""
        return [
            QuarantineEntry(int(t), str(d), str(f), str(x), bytes(r))
            for t, d, f, x, r in self._db.execute(
                "SELECT time_ms, device, fault, detail, raw FROM quarantine"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]

    def stats(self) -> QueueStats:
        """Depth, bytes, oldest queued time, next seq and counters."""
        # Rows are queued in seq order with a non-decreasing clock: the first is oldest.
        row = self._db.execute("SELECT queued_ms FROM events ORDER BY seq LIMIT 1").fetchone()
        return QueueStats(
            depth=self._depth,
            urgent=self._urgent,
            bytes=self._bytes,
            oldest_ms=None if row is None else int(row[0]),
            next_seq=self._next_seq,
            counters=self.counters(),
        )

    @property
    def depth(self) -> int:
        """Number of queued events."""
        return self._depth

    @property
    def next_seq(self) -> int:
        """The seq the next stored Event will get."""
        return self._next_seq

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


@dataclass
class _Pending:
    drafts: list[Draft]
    states: dict[str, JsonState]
    counters: dict[str, int]
    quarantine: list[QuarantineEntry]
    future: asyncio.Future[AppendResult]
    seen: list[int]


class EventQueue:
    """Asyncio facade over a :class:`QueueStore`: group commit on a dedicated thread.

    Sources call :meth:`put` with drafts (and their codec states); every put that
    arrives while a commit runs joins the next transaction. ``put`` returns once the
    events are on disk; :meth:`submit` returns at once (with a future) unless more than
    ``max_pending`` drafts wait, which is the backpressure a fast source feels.
    """

    def __init__(
        self,
        store: QueueStore,
        *,
        max_pending: int = 2000,
        on_commit: Callable[[AppendResult], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
        commit_retry_s: Sequence[float] = COMMIT_RETRY_S,
    ) -> None:
        self.store = store
        self.commit_retry_s = tuple(commit_retry_s)
        # One thread owns the SQLite connection: every store call runs there.
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue")
        self._pending: _Pending | None = None
        self._pending_count = 0
        self._max_pending = max_pending
        self._writer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()
        self._room.set()
        self.changed = asyncio.Event()  # set after each commit that stored events
        #: Where commits take their ``queued_ms`` from: the agent's clock, the same one
        #: expiry compares against (the raw wall clock may be 1970 after a boot).
        self.now_ms: Callable[[], int] | None = None
        self._on_commit = on_commit
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, **kwargs: Any) -> EventQueue:
        """Open the store on the queue's own thread (SQLite objects stay on it)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue")
        loop = asyncio.get_running_loop()
        store_kwargs = {
            k: kwargs.pop(k)
            for k in ("gateway", "site", "max_bytes", "max_age_s", "quarantine_max")
            if k in kwargs
        }
        try:
            store = await loop.run_in_executor(
                executor, lambda: QueueStore(path, check_same_thread=False, **store_kwargs)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor=executor, **kwargs)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method on the queue thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def submit(
        self,
        drafts: Sequence[Draft],
        states: Mapping[str, JsonState] | None = None,
        counters: Mapping[str, int] | None = None,
        quarantine: Sequence[QuarantineEntry] = (),
        seen: Sequence[int] = (),
    ) -> asyncio.Future[AppendResult]:
        """Queue drafts for the next group commit; the future resolves once on disk.

        Every submit joining the same commit gets the same future (and result), so a
        busy source does not pay for one future per message.
        """
        if self._closed:
            raise QueueError("the queue is closed")
        p = self._pending
        if p is None:
            fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
            p = self._pending = _Pending([], {}, {}, [], fut, [])
        p.drafts.extend(drafts)
        if states:
            p.states.update(states)
        if counters:
            for k, v in counters.items():
                p.counters[k] = p.counters.get(k, 0) + v
        if quarantine:
            p.quarantine.extend(quarantine)
        if seen:
            p.seen.extend(seen)
        self._pending_count += len(drafts)
        if self._pending_count >= self._max_pending:
            self._room.clear()
        self._drained.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="queue-writer")
        return p.future

    async def put(
        self,
        drafts: Sequence[Draft],
        states: Mapping[str, JsonState] | None = None,
        counters: Mapping[str, int] | None = None,
        quarantine: Sequence[QuarantineEntry] = (),
    ) -> AppendResult:
        """Store drafts and wait until they are on disk."""
        return await self.submit(drafts, states, counters, quarantine)

    async def wait_for_room(self) -> None:
        """Wait while too many drafts wait for their commit (backpressure)."""
        await self._room.wait()

    async def _write_loop(self) -> None:
        while self._pending is not None:
            batch, self._pending = self._pending, None
            self._pending_count = 0
            self._room.set()
            try:
                result = await self._commit(batch)
            except Exception as exc:  # disk full, I/O error: tell every waiter
                log.error("queue: commit of %d events failed: %s", len(batch.drafts), exc)
                await self.call(self.store.note_commit_failed, len(batch.drafts))
                if not batch.future.done():
                    batch.future.set_exception(QueueError(f"commit failed: {exc}"))
                    batch.future.exception()  # retrieved: waiters may be gone
                continue
            if self._on_commit is not None:
                try:
                    self._on_commit(result)
                except Exception:
                    log.exception("queue: commit callback failed")
            if not batch.future.done():
                batch.future.set_result(result)
            if result.events:
                self.changed.set()
        self._drained.set()

    async def _commit(self, batch: _Pending) -> AppendResult:
        """Store ``batch``, trying again after :data:`COMMIT_RETRY_S` on operational
        errors (each retry counted as ``commit_retried`` by the commit that works)."""
        retried = 0
        while True:
            now_ms = None if self.now_ms is None else self.now_ms()
            counters = batch.counters
            if retried:
                before = counters.get("commit_retried", 0)
                counters = {**counters, "commit_retried": before + retried}
            try:
                return await self.call(
                    functools.partial(
                        self.store.append,
                        batch.drafts,
                        batch.states,
                        counters=counters,
                        quarantine=batch.quarantine,
                        seen=batch.seen,
                        now_ms=now_ms,
                    )
                )
            except sqlite3.OperationalError as exc:
                if retried >= len(self.commit_retry_s):
                    raise
                delay = self.commit_retry_s[retried]
                retried += 1
                log.warning(
                    "queue: commit of %d events failed (%s); trying again in %.1f s",
                    len(batch.drafts),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed."""
        await self._drained.wait()

    async def peek(self, *, urgent: bool, after: int, limit: int, max_bytes: int) -> Batch | None:
        """See :meth:`QueueStore.peek`."""
        return await self.call(
            lambda: self.store.peek(urgent=urgent, after=after, limit=limit, max_bytes=max_bytes)
        )

    async def peek_next(
        self, *, after_urgent: int, after: int, limit: int, max_bytes: int
    ) -> Batch | None:
        """See :meth:`QueueStore.peek_next` (one trip to the queue thread)."""
        return await self.call(
            lambda: self.store.peek_next(
                after_urgent=after_urgent, after=after, limit=limit, max_bytes=max_bytes
            )
        )

    async def ack(self, seqs: Sequence[int]) -> int:
        """See :meth:`QueueStore.ack`."""
        return await self.call(self.store.ack, seqs)

    async def stats(self) -> QueueStats:
        """See :meth:`QueueStore.stats`."""
        return await self.call(self.store.stats)

    async def close(self) -> None:
        """Commit what is pending, then close the store and its thread."""
        await self.flush()
        self._closed = True
        await self.call(self.store.close)
        self._executor.shutdown(wait=True)
