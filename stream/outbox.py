"""The notification sender: drains the outbox, exactly once in effect per recipient.

The alert manager writes one outbox row per (transition, recipient, notifier) in the
same transaction as the transition. This sender delivers the rows and marks each one
sent (or retried, or failed) afterwards. What that guarantees, precisely:

- **Nothing lost.** A row stays ``pending`` until its delivery was confirmed; after a
  crash or restart the pending rows are sent.
- **No second notification for one transition, in effect.** A crash after the receiver
  accepted a notification but before the row was marked sent makes the row go out
  again after the restart. That window cannot be closed from the sending side alone
  (the receiver's acceptance and our bookkeeping are two systems). The resend carries
  the same id (``Idempotency-Key`` for webhooks, ``id`` in every payload): a receiver
  that remembers the ids it has processed drops it, and then every notification is
  processed exactly once. The MQTT alert topic carries state (retained, newest wins),
  so a resend there changes nothing. Group robots (WeCom, DingTalk) cannot dedup: a
  crash in that window can show one message twice in the chat.
- **Order per recipient.** Rows of one (notifier, recipient) go out in the order they
  were written; a row waiting for a retry holds back the later ones (so
  "acknowledged" never overtakes "raised"). Different recipients do not wait for each
  other.

Failures are retried with exponential backoff (``delivery.backoff_initial`` doubling
up to ``delivery.backoff_max``) up to ``delivery.max_attempts``; a permanent failure
(HTTP 4xx, a robot's configuration error) or exhausted attempts mark the row
``failed`` and count it. The MQTT alert topic retries forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from stream.clock import Clock
from stream.config import DeliveryConfig
from stream.metrics import Metrics
from stream.notifiers.base import Notification, Notifier, NotifyError
from stream.retry import TRANSIENT, LoopRetry
from stream.state import OutboxRow, StateStore

log = logging.getLogger(__name__)

# on_result(notifier, outcome) with outcome "sent" | "retry" | "failed" (metrics)
ResultHook = Callable[[str, str], None]


class OutboxSender:
    """Delivers pending outbox rows through the configured notifiers."""

    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        delivery: DeliveryConfig,
        *,
        on_result: ResultHook | None = None,
        concurrency: int = 16,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.delivery = delivery
        self.on_result = on_result
        self.metrics = metrics
        self.wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)

    async def start(self) -> None:
        """Open the notifiers' sessions."""
        for notifier in self.notifiers.values():
            await notifier.start()

    async def close(self) -> None:
        """Close the notifiers."""
        for notifier in self.notifiers.values():
            try:
                await notifier.close()
            except Exception:  # closing must not stop the shutdown
                log.exception("closing notifier %s", notifier.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set; sleeps until the next row is due or :attr:`wake`.

        Each due row is sent in its own task, so a slow receiver holds back only its own
        queue (one alert's notifications to one recipient through one notifier). A state
        database failing for a while (locked, I/O, full) is waited out with backoff
        (:class:`stream.retry.LoopRetry`); a row whose outcome could not be recorded stays
        pending and is sent again later with the same id.
        """
        retry = LoopRetry("outbox", self.metrics, stop)
        # task -> the queue (notifier, recipient, alert) it is sending for
        inflight: dict[asyncio.Task[None], tuple[str, str, str]] = {}
        while not stop.is_set():
            self.wake.clear()
            busy = set(inflight.values())
            try:
                now = self.clock.now_ms()
                started = 0
                for row in self.store.outbox_heads(now, limit=500):
                    queue = (row.notifier, row.recipient, row.alert_id)
                    if queue in busy:
                        continue
                    inflight[asyncio.ensure_future(self._deliver(row))] = queue
                    busy.add(queue)
                    started += 1
                deadline = self.store.next_outbox_attempt()
            except TRANSIENT as exc:
                await retry.failed(exc)
                continue
            if deadline is not None and deadline <= now and not started:
                deadline = None  # what is due is in flight: wait for it to finish
            waiters: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(self.clock.wait_until(deadline, self.wake)),
                asyncio.ensure_future(stop.wait()),
            }
            try:
                await asyncio.wait(waiters | set(inflight), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            failure: BaseException | None = None
            for task in [t for t in inflight if t.done()]:
                del inflight[task]
                error = None if task.cancelled() else task.exception()
                if error is None:
                    continue
                if not isinstance(error, TRANSIENT):
                    raise error  # a bug: stop the processor (it exits non-zero)
                failure = error
            if failure is not None:
                await retry.failed(failure)
            else:
                retry.ok()
        if inflight:
            # Let deliveries in progress finish (and be marked) before the shutdown.
            await asyncio.wait(set(inflight), timeout=5.0)

    async def drain_once(self) -> int:
        """Send every row due now (heads of their queues) and wait for the outcomes;
        returns how many were attempted (tests, tools)."""
        heads = self.store.outbox_heads(self.clock.now_ms())
        if not heads:
            return 0
        await asyncio.gather(*(self._deliver(row) for row in heads))
        return len(heads)

    async def _deliver(self, row: OutboxRow) -> None:
        notifier = self.notifiers.get(row.notifier)
        if notifier is None:
            self._finish(row, "failed", f"notifier {row.notifier!r} is not configured")
            return
        note = Notification(row.id, row.notifier, row.recipient, row.payload)
        async with self._sem:
            try:
                await notifier.send(note)
            except NotifyError as exc:
                self._failed(row, notifier, str(exc), exc.retryable)
                return
            except Exception as exc:  # a notifier bug must not stop the sender
                log.exception("notifier %s failed on %s", row.notifier, row.id)
                self._failed(row, notifier, f"{type(exc).__name__}: {exc}", True)
                return
        self._finish(row, "sent", None)

    def _failed(self, row: OutboxRow, notifier: Notifier, error: str, retryable: bool) -> None:
        attempts = row.attempts + 1
        if retryable and (notifier.retry_forever or attempts < self.delivery.max_attempts):
            self._finish(row, "retry", error)
        else:
            self._finish(row, "failed", error)

    def _backoff_ms(self, attempts: int) -> int:
        base = self.delivery.backoff_initial_ms * (2 ** min(attempts, 20))
        capped = min(self.delivery.backoff_max_ms, base)
        # +-20 % jitter so many rows failing together do not retry in lockstep.
        return max(1, int(capped * random.uniform(0.8, 1.2)))

    def _finish(self, row: OutboxRow, outcome: str, error: str | None) -> None:
        now = self.clock.now_ms()
        with self.store.transaction():
            if outcome == "sent":
                self.store.mark_sent(row.id, now)
            elif outcome == "retry":
                self.store.mark_retry(row.id, now + self._backoff_ms(row.attempts), error or "")
            else:
                self.store.mark_failed(row.id, now, error or "")
        if outcome == "sent":
            log.debug("sent %s via %s", row.id, row.notifier)
        elif outcome == "retry":
            log.warning("delivery of %s via %s failed, will retry: %s", row.id, row.notifier, error)
        else:
            log.error("delivery of %s via %s given up: %s", row.id, row.notifier, error)
        if self.on_result is not None:
            self.on_result(row.notifier, outcome)
