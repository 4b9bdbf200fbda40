"""A failed group commit (I/O error, disk full) is never silent.

The commit is made to fail by a connection wrapper that raises
``sqlite3.OperationalError`` on ``COMMIT``, as SQLite does when the disk is full. A
passing fault is tried again (``COMMIT_RETRY_S``) and loses nothing; one that outlasts
the retries fails the commit. The unit tests of a failed commit open their queue
without retries (``commit_retry_s=()``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from edge_agent.ingest import message_digest
from edge_agent.queue import COMMIT_RETRY_S, EventQueue, QueueError
from edge_agent.sources.mqtt import _acker
from tests.edge_agent.test_queue import draft


class FailingCommit:
    """An SQLite connection whose next ``times`` ``COMMIT``s fail (then it works again)."""

    def __init__(self, db: sqlite3.Connection, times: int = 1) -> None:
        self.db = db
        self.fail = times

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_passing_commit_fault_is_tried_again_and_loses_nothing(tmp_path) -> None:
    q = await EventQueue.open(
        tmp_path / "q.db", gateway="gw-1", site="s-1", commit_retry_s=(0.01, 0.01)
    )
    await q.put([draft(0)])
    q.store._db = FailingCommit(q.store._db, times=2)  # type: ignore[assignment]
    res = await q.put([draft(i) for i in range(1, 4)], counters={"received": 3})
    assert [e.seq for e in res.events] == [2, 3, 4]
    assert (await q.stats()).depth == 4
    counters = await q.call(q.store.counters)
    assert counters.get("commit_retried") == 2
    assert counters.get("received") == 3
    assert "commit_failed" not in counters
    await q.close()


async def test_a_fault_outlasting_the_retries_fails_the_commit(tmp_path) -> None:
    q = await EventQueue.open(
        tmp_path / "q.db", gateway="gw-1", site="s-1", commit_retry_s=(0.01, 0.01)
    )
    q.store._db = FailingCommit(q.store._db, times=3)  # type: ignore[assignment]
    with pytest.raises(QueueError):
        await q.put([draft(1)])
    counters = await q.call(q.store.counters)
    assert counters.get("commit_failed") == 1
    assert "commit_retried" not in counters  # rolled back with the failed commit
    await q.close()


async def test_failed_commit_raises_is_counted_and_totals_follow_the_disk(tmp_path) -> None:
    q = await EventQueue.open(tmp_path / "q.db", gateway="gw-1", site="s-1", commit_retry_s=())
    await q.put([draft(0)])
    before = await q.stats()
    q.store._db = FailingCommit(q.store._db)  # type: ignore[assignment]

    with pytest.raises(QueueError):
        await q.put([draft(i) for i in range(1, 6)], counters={"received": 5})

    stats = await q.stats()
    # the in-memory totals match the rows that are there, not the rolled-back ones
    assert (stats.depth, stats.bytes, stats.urgent) == (before.depth, before.bytes, 0)
    counters = await q.call(q.store.counters)
    assert counters.get("commit_failed") == 1
    assert counters.get("commit_failed_events") == 5
    assert "received" not in counters  # rolled back with the events
    # and the next commit works, with the next seq
    res = await q.put([draft(9)])
    assert [e.seq for e in res.events] == [2]
    assert (await q.stats()).depth == 2
    await q.close()


class Paho:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.disconnects = 0

    def ack(self, mid: int, qos: int) -> int:
        self.acked.append(mid)
        return 0

    def disconnect(self) -> int:
        self.disconnects += 1
        return 0


async def test_mqtt_source_does_not_ack_a_failed_commit_and_reconnects(tmp_path) -> None:
    q = await EventQueue.open(tmp_path / "q.db", gateway="gw-1", site="s-1", commit_retry_s=())
    q.store._db = FailingCommit(q.store._db)  # type: ignore[assignment]
    from edge_agent.ingest import SeenMessages

    paho, seen = Paho(), SeenMessages()
    failed: list[BaseException] = []
    digest = message_digest("z2m/door", b"{}", 5)
    fut = q.submit([draft(0)], seen=[digest])
    fut.add_done_callback(_acker(paho, [(5, 1, digest)], seen, failed))
    with pytest.raises(QueueError):
        await fut
    await q.flush()
    assert paho.acked == []  # the site broker delivers it again...
    assert paho.disconnects == 1  # ...after the reconnect this forces
    assert len(failed) == 1 and digest not in seen
    await q.close()


async def test_codec_state_returns_to_the_stored_one_after_a_failed_commit(tmp_path) -> None:
    from device_profiles.codecs import Reading
    from device_profiles.profiles import ProfileRegistry
    from edge_agent.clock import Clock
    from edge_agent.config import load_config
    from edge_agent.health import DeviceHealth
    from edge_agent.ingest import Ingest
    from tests.edge_agent.test_units import _config

    cfg = load_config(
        _config(
            tmp_path,
            [{"id": "ff-1", "profile": "beamcount-irc200", "modbus": {"port": "/dev/ttyUSB1"}}],
        )
    )
    q = await EventQueue.open(cfg.queue.path, gateway="g1", site="s1", commit_retry_s=())
    ingest = Ingest(
        cfg, q, clock=Clock(trust="always"), health=DeviceHealth(), registry=ProfileRegistry.load()
    )
    ff = ingest.devices["ff-1"]

    def counts(total: int) -> Reading:
        return Reading("counts", {"in_total": total, "out_total": 0})

    await ingest.readings(ff, [counts(10)])  # the baseline
    q.store._db = FailingCommit(q.store._db)  # type: ignore[assignment]
    with pytest.raises(QueueError):
        await ingest.readings(ff, [counts(13)])  # +3 people, not stored
    # the site broker delivers the poll again: the 3 people are counted, not lost
    res = await ingest.readings(ff, [counts(13)])
    assert [e.values["in"] for e in res.events if e.reading == "counts"] == [3]
    await q.close()


class FailingEventCommit:
    """An SQLite connection whose next commits that store Events fail: once more than
    the queue tries (a lasting fault, not a passing one).

    Other transactions (acks, counters, meta) go through, so the failure hits a group
    commit of readings whatever the agent's housekeeping does meanwhile.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.fail = len(COMMIT_RETRY_S) + 1
        self.inserting = False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("BEGIN"):
            self.inserting = False
        elif sql == "COMMIT" and self.inserting and self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        if sql.startswith("INSERT INTO events"):
            self.inserting = True
        return self.db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.mark.integration
async def test_a_failed_commit_shows_in_the_heartbeat_and_mqtt_comes_again(
    tmp_path, mosquitto, topic_prefix
) -> None:
    """The heartbeat counts the failed commit and its readings; the site broker delivers
    the door message again, so it still arrives, once."""
    from tests.edge_agent.helpers import Collector, running_agent, write_config, z2m_door

    root = f"{topic_prefix}/carewatch/v1"
    cfg = write_config(
        tmp_path,
        central=mosquitto,
        site_broker=mosquitto,
        root=root,
        devices=[
            {
                "id": "door-1",
                "profile": "aqara-mccgq11lm",
                "mqtt": {"address": "hall", "base_topic": f"{topic_prefix}/z2m"},
            }
        ],
    )
    sim = z2m_door(mosquitto, topic_prefix)
    async with Collector(mosquitto, root) as col, running_agent(cfg) as agent, sim:
        q = agent.queue
        assert q is not None
        await col.wait_for(lambda c: c.sources_up(), what="the site broker subscribed")
        failing = await q.call(lambda: FailingEventCommit(q.store._db))
        await q.call(setattr, q.store, "_db", failing)  # on the queue's own thread
        await sim.open_door()
        await col.wait_for(
            lambda c: any(e.reading == "contact" for e in c.events), what="the redelivered door"
        )
        assert failing.fail == 0  # the first commit of the door did fail
        await col.wait_for(
            lambda c: bool(c.health) and c.health[-1]["commit_failed"] == 1,
            what="commit_failed in the heartbeat",
        )
    beat = col.health[-1]
    assert beat["commit_failed_events"] >= 1
    contacts = [e for e in col.events if e.reading == "contact"]
    assert len(contacts) == 1 and contacts[0].values["contact"] is False
