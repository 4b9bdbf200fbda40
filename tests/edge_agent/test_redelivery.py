"""Which DUP redeliveries from a site broker the MQTT source skips.

Only a message that was stored but whose PUBACK may not have gone out is a redelivery
to skip; a new message with the same bytes (Zigbee2MQTT payloads carry no counter)
must be stored again, even when the broker flags it DUP after a restart.
"""

from __future__ import annotations

from typing import Any

from edge_agent.ingest import SeenMessages, message_digest
from edge_agent.queue import EventQueue
from edge_agent.sources.mqtt import _acker

DOOR = b'{"contact":true,"battery":97}'


class Paho:
    """Records PUBACKs; ``fail`` makes them raise (the connection is gone)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.acked: list[int] = []
        self.fail = fail

    def ack(self, mid: int, qos: int) -> Any:
        if self.fail:
            raise OSError("connection lost")
        self.acked.append(mid)
        return 0


def test_digest_names_one_delivery_not_the_bytes() -> None:
    a = message_digest("z2m/door", DOOR, 7)
    assert a == message_digest("z2m/door", DOOR, 7)  # the redelivery keeps its packet id
    assert a != message_digest("z2m/door", DOOR, 8)  # a new message with the same bytes


async def test_a_new_message_with_stored_bytes_is_not_a_redelivery(tmp_path) -> None:
    q = await EventQueue.open(tmp_path / "q.db", gateway="gw-1", site="s-1")
    seen = SeenMessages()
    stored = message_digest("z2m/door", DOOR, 1)
    fut = q.submit([], seen=[stored])
    paho = Paho()
    fut.add_done_callback(_acker(paho, [(1, 1, stored)], seen))
    await fut
    assert paho.acked == [1]
    # the PUBACK may still be lost (a reload closes the link): its redelivery is known,
    # also by the next run, which reads the digests back from disk
    assert stored in seen
    assert await q.call(q.store.seen_digests) == [stored]
    # the door reports the same state and battery again: a new packet id, a new event
    assert message_digest("z2m/door", DOOR, 2) not in seen
    await q.close()
