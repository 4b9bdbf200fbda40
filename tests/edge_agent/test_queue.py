"""The durable queue: seqs, priorities, caps, acks, persistence across reopen."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

import pytest

from device_profiles.events import decode_batch, encode_batch, encode_event
from edge_agent.queue import (
    ROW_OVERHEAD,
    Draft,
    EventQueue,
    Priority,
    QuarantineEntry,
    QueueStore,
)

T0 = 1_800_000_000_000


def draft(i: int = 0, *, urgent: bool = False, prio: Priority = Priority.NORMAL, **kw) -> Draft:
    return Draft(
        device=kw.pop("device", "door-1"),
        kind=kw.pop("kind", "door"),
        reading=kw.pop("reading", "press" if urgent else "contact"),
        time=T0 + i,
        received=T0 + i,
        values=kw.pop("values", {"i": i}),
        urgent=urgent,
        priority=prio,
        **kw,
    )


def store(tmp_path, **kw) -> QueueStore:
    return QueueStore(tmp_path / "q.db", gateway="gw-1", site="s-1", **kw)


def test_seqs_are_assigned_in_order_and_survive_reopen(tmp_path):
    q = store(tmp_path)
    res = q.append([draft(i) for i in range(3)])
    assert [e.seq for e in res.events] == [1, 2, 3]
    batch = q.peek(urgent=False)
    assert batch is not None and batch.seqs == (1, 2, 3)
    assert q.ack(batch.seqs) == 3
    q.close()
    q = store(tmp_path)  # acked events are gone, but seqs never repeat
    assert q.depth == 0
    assert [e.seq for e in q.append([draft(9)]).events] == [4]
    assert q.counters()["sent"] == 3


def test_batch_payload_is_encode_batch(tmp_path):
    q = store(tmp_path)
    events = q.append([draft(i) for i in range(4)]).events
    batch = q.peek(urgent=False)
    assert batch is not None
    assert batch.payload == encode_batch(events)
    assert decode_batch(batch.payload) == events


def test_urgent_first_then_oldest_and_peek_after(tmp_path):
    q = store(tmp_path)
    q.append([draft(0), draft(1, prio=Priority.TELEMETRY), draft(2, urgent=True), draft(3)])
    urgent = q.peek(urgent=True)
    assert urgent is not None and urgent.seqs == (3,) and urgent.urgent
    rest = q.peek(urgent=False)
    assert rest is not None and rest.seqs == (1, 2, 4)
    assert q.peek(urgent=False, after=2).seqs == (4,)  # type: ignore[union-attr]
    assert q.peek(urgent=False, after=4) is None
    # limits: count and bytes
    assert q.peek(urgent=False, limit=2).seqs == (1, 2)  # type: ignore[union-attr]
    one = q.peek(urgent=False, max_bytes=10)
    assert one is not None and len(one) == 1  # always at least one event


def test_cap_drops_oldest_telemetry_first_never_urgent(tmp_path):
    def tele(
        i: int,
    ) -> Draft:  # same size as a normal draft: "battery" and "contact" have 7 letters
        return draft(i, prio=Priority.TELEMETRY, reading="battery")

    probe = store(tmp_path / "probe").append([draft(10), draft(10, urgent=True)]).events
    row, urow = (len(encode_event(e)) + ROW_OVERHEAD for e in probe)
    q = store(tmp_path, max_bytes=7 * row + 3 * urow + row // 2)
    q.append([tele(10 + i) for i in range(3)])  # seqs 1-3
    q.append([draft(20 + i) for i in range(3)])  # 4-6 normal
    q.append([draft(30 + i, urgent=True) for i in range(3)])  # 7-9 urgent
    q.append([draft(40)])  # 10: still fits
    assert q.counters() == {}
    q.append([draft(41), tele(42), draft(43)])  # 11, 12, 13: drop telemetry 1, 2, 3
    assert q.counters() == {"dropped_full_telemetry": 3}

    def left() -> list[int]:
        return [e.seq for e in decode_batch(q.peek(urgent=False, limit=100).payload)]  # type: ignore[union-attr]

    assert left() == [4, 5, 6, 10, 11, 12, 13]
    # more normal events: the remaining telemetry (12) first, then the oldest normal
    q.append([draft(50 + i) for i in range(3)])  # 14-16
    assert q.counters() == {"dropped_full_telemetry": 4, "dropped_full_normal": 2}
    assert left() == [6, 10, 11, 13, 14, 15, 16]
    # a telemetry newcomer never evicts normal events: it is dropped itself
    res = q.append([tele(60)])
    assert res.events == [] and res.dropped == {"dropped_full_new": 1}
    # urgent events are never dropped, even over the cap
    q.append([draft(70 + i, urgent=True) for i in range(20)])  # 17-36
    urgent = q.peek(urgent=True, limit=100)
    assert urgent is not None and urgent.seqs == (7, 8, 9, *range(17, 37))
    assert q.counters()["urgent_over_cap"] > 0
    assert q.stats().urgent == 23
    q.close()
    assert store(tmp_path).counters()["dropped_full_telemetry"] == 4  # persisted


def test_cap_within_one_commit_drops_its_oldest_telemetry(tmp_path):
    # One group commit that overflows the cap: its own oldest telemetry goes first,
    # never its normal events (before, the newest normal events were refused instead).
    probe = store(tmp_path / "probe").append([draft(0)]).events
    row = len(encode_event(probe[0])) + ROW_OVERHEAD
    q = store(tmp_path, max_bytes=15 * row + row // 2)
    tele = [draft(i, prio=Priority.TELEMETRY, reading="battery") for i in range(10)]
    normal = [draft(10 + i) for i in range(10)]
    res = q.append([*tele, *normal])
    assert res.dropped == {"dropped_full_telemetry": 5}
    kept = [e.seq for e in decode_batch(q.peek(urgent=False, limit=100).payload)]  # type: ignore[union-attr]
    assert kept == list(range(6, 21))  # telemetry 1-5 (the oldest) dropped
    assert [e.seq for e in res.events] == kept  # the result lists what is stored
    assert q.depth == 15 and q.stats().bytes <= q.max_bytes
    # urgent events of a commit evict its normal ones too, oldest first
    res = q.append([draft(30 + i, urgent=True) for i in range(3)])
    assert res.dropped == {"dropped_full_telemetry": 3}
    res = q.append([draft(40 + i) for i in range(2)] + [draft(50, urgent=True)])
    assert res.dropped == {"dropped_full_telemetry": 2, "dropped_full_normal": 1}
    assert [e.seq for e in res.events] == [24, 25, 26]


def test_expire_spares_urgent(tmp_path):
    q = store(tmp_path, max_age_s=60)
    q.append([draft(0), draft(1, urgent=True)], now_ms=T0)
    q.append([draft(2)], now_ms=T0 + 50_000)
    assert q.expire(now_ms=T0 + 70_000) == 1
    assert q.counters()["dropped_expired"] == 1
    assert q.peek(urgent=True).seqs == (2,)  # type: ignore[union-attr]
    assert q.peek(urgent=False).seqs == (3,)  # type: ignore[union-attr]
    assert q.stats().oldest_ms == T0


def test_invalid_draft_is_rejected_without_burning_a_seq(tmp_path):
    q = store(tmp_path)
    res = q.append([draft(0), draft(1, device="bad id"), draft(2)])
    assert [e.seq for e in res.events] == [1, 2]
    assert len(res.rejected) == 1 and "device=" in res.rejected[0].reason
    assert q.counters()["dropped_invalid"] == 1


def test_states_quarantine_and_counters_commit_with_events(tmp_path):
    q = store(tmp_path, quarantine_max=3)
    q.append(
        [draft(0)],
        states={"ff-1": {"in_total": 5, "out_total": 2}},
        counters={"decode_errors.ff-1.checksum": 2},
        quarantine=[
            QuarantineEntry(T0 + i, "ff-1", "checksum", f"bad {i}", b"\x00" * 600) for i in range(5)
        ],
    )
    q.close()
    q = store(tmp_path, quarantine_max=3)
    assert q.states() == {"ff-1": {"in_total": 5, "out_total": 2}}
    assert q.counters()["decode_errors.ff-1.checksum"] == 2
    quarantined = q.quarantined()
    assert [e.detail for e in quarantined] == ["bad 4", "bad 3", "bad 2"]
    assert len(quarantined[0].raw) == 512


def test_queue_belongs_to_one_gateway(tmp_path):
    store(tmp_path).close()
    from device_profiles.errors import ConfigError

    with pytest.raises(ConfigError, match="belongs to site 's-1' gateway 'gw-1'"):
        QueueStore(tmp_path / "q.db", gateway="gw-2", site="s-1")


def test_correct_times_rewrites_untrusted_events_of_this_run(tmp_path):
    q = store(tmp_path)
    q.append(
        [
            draft(0),
            Draft(device="d", kind="door", reading="contact", time=T0, received=T0, clock_ok=False),
            Draft(
                device="d",
                kind="face_terminal",
                reading="checkin",
                time=T0 - 5,
                received=T0,
                clock_ok=False,
                device_time=True,
            ),
        ]
    )
    assert q.correct_times(1000) == 2
    events = decode_batch(q.peek(urgent=False).payload)  # type: ignore[union-attr]
    assert [(e.time, e.received, e.clock_ok) for e in events] == [
        (T0, T0, True),
        (T0 + 1000, T0 + 1000, True),
        (T0 - 5, T0 + 1000, True),
    ]
    assert q.correct_times(1000) == 0  # already corrected
    assert q.counters()["clock_corrected"] == 2


def _writer(path: str, conn) -> None:  # runs in a child process
    q = QueueStore(path, gateway="gw-1", site="s-1")
    n = 0
    while True:
        res = q.append([draft(n + i) for i in range(5)])
        n += 5
        conn.send(res.events[-1].seq)  # reported only after the commit


def test_seqs_never_repeat_after_sigkill(tmp_path):
    path = str(tmp_path / "q.db")
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_writer, args=(path, child))
    proc.start()
    last = 0
    while last < 200:
        last = parent.recv()
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    while parent.poll():
        last = parent.recv()
    q = QueueStore(path, gateway="gw-1", site="s-1")
    assert q.next_seq > last
    seqs = q.peek(urgent=False, limit=100000, max_bytes=1 << 30).seqs  # type: ignore[union-attr]
    assert list(seqs) == list(range(1, q.next_seq))  # every committed event is there
    assert q.append([draft(0)]).events[0].seq == q.next_seq - 1


async def test_event_queue_group_commits(tmp_path):
    q = await EventQueue.open(tmp_path / "q.db", gateway="gw-1", site="s-1")
    commits = []
    q._on_commit = lambda res: commits.append(len(res.events))
    futures = [q.submit([draft(i)]) for i in range(50)]
    results = await asyncio.gather(*futures)
    assert sum(commits) == 50 and len(commits) < 50  # grouped
    assert {e.seq for r in results for e in r.events} == set(range(1, 51))
    assert q.changed.is_set()
    batch = await q.peek(urgent=False, after=0, limit=1000, max_bytes=1 << 20)
    assert batch is not None and len(batch) == 50
    assert await q.ack(batch.seqs) == 50
    assert (await q.stats()).depth == 0
    await q.close()


def test_seen_site_messages_persist_with_the_events(tmp_path):
    from edge_agent.ingest import SeenMessages, message_digest

    q = store(tmp_path)
    d1, d2 = message_digest("z2m/a", b"{}"), message_digest("z2m/b", b"{}")
    assert d1 != d2 and -(2**63) <= d1 < 2**63
    q.append([draft(0)], seen=[d1, d2])
    q.close()
    q = store(tmp_path)
    assert q.seen_digests() == [d1, d2]
    seen = SeenMessages(q.seen_digests(), cap=2)
    assert d1 in seen and d2 in seen
    seen.add(d1)  # already there: nothing changes
    seen.add(99)  # the oldest is forgotten
    assert d1 not in seen and d2 in seen and 99 in seen and len(seen) == 2


async def test_queue_ages_follow_the_agent_clock_on_a_1970_boot(tmp_path, monkeypatch):
    # A Pi without RTC boots at 1970 and NTP is unreachable: the wall clock says 1970
    # while the agent's clock estimates from the build floor. Ages must be stamped and
    # compared with the same clock, or every queued event expires at the first check.
    from edge_agent.clock import BUILD_FLOOR_MS, Clock

    boot_wall = 5.0  # seconds after the epoch
    mono = [1000.0]
    monkeypatch.setattr("edge_agent.queue.time.time", lambda: boot_wall + mono[0] - 1000.0)
    clock = Clock(trust="never", wall=lambda: boot_wall + mono[0] - 1000.0, mono=lambda: mono[0])
    q = await EventQueue.open(tmp_path / "q.db", gateway="gw-1", site="s-1", max_age_s=3600)
    q.now_ms = clock.now_ms
    stamp = clock.now()
    drafts = [
        Draft(
            device="d",
            kind="door",
            reading="contact",
            time=stamp.ms,
            received=stamp.ms,
            clock_ok=False,
        )
        for _ in range(3)
    ]
    await q.put(drafts)
    queued = (await q.stats()).oldest_ms
    assert queued is not None and queued >= BUILD_FLOOR_MS
    mono[0] += 120.0  # two minutes later, still untrusted
    assert await q.call(q.store.expire, clock.now_ms()) == 0
    assert q.store.depth == 3
    # NTP answers ten days after the floor (off longer than max_age): the correction
    # shifts queued_ms too, so the events are two minutes old, not ten days.
    delta = 10 * 86400_000
    real_now = clock.now_ms() + delta
    assert await q.call(q.store.correct_times, delta, real_now) == 3
    assert (await q.stats()).oldest_ms == queued + delta
    assert await q.call(q.store.expire, real_now) == 0
    assert await q.call(q.store.expire, real_now + 3600_000) == 3  # max_age still applies
    await q.close()


def test_correct_times_works_in_short_transactions(tmp_path):
    # A full queue of untrusted rows must not be loaded (and re-encoded) all at once:
    # the gateway's memory limit is far below the queue cap.
    q = store(tmp_path)
    n = 2 * 500 + 7  # chunks of 500 rows
    untrusted = [
        Draft(
            device="d", kind="door", reading="contact", time=T0 + i, received=T0 + i, clock_ok=False
        )
        for i in range(n)
    ]
    q.append([draft(0), *untrusted[: n // 2], draft(1), *untrusted[n // 2 :]], now_ms=T0)
    statements: list[str] = []
    q._db.set_trace_callback(statements.append)
    assert q.correct_times(1000, now_ms=T0 + 500) == n
    q._db.set_trace_callback(None)
    assert statements.count("COMMIT") == 3  # one per chunk of rows
    events = decode_batch(q.peek(urgent=False, limit=10_000, max_bytes=1 << 30).payload)  # type: ignore[union-attr]
    assert len(events) == n + 2 and all(e.clock_ok for e in events)
    fixed = [e for e in events if e.device == "d"]
    assert [e.received for e in fixed] == [T0 + i + 1000 for i in range(n)]
    assert q.stats().oldest_ms == T0  # the trusted first row is not shifted
    assert q._db.execute("SELECT MAX(queued_ms) FROM events").fetchone()[0] == T0 + 500
    assert q.stats().bytes == q._totals()[0]
    assert q.counters()["clock_corrected"] == n
