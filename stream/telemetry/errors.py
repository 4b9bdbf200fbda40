"""Typed errors of the telemetry writer (all under :class:`CarewatchError`)."""

from __future__ import annotations

from device_profiles.errors import CarewatchError


class LineProtocolError(CarewatchError, ValueError):
    """A point cannot be expressed in InfluxDB line protocol.

    Raised for a name that the protocol cannot carry unambiguously (a newline, a
    measurement starting with ``#``, a backslash right before a character that must be
    escaped), a reserved key (``time``) in a tag, or a point left without any field.
    The message names the part and the value.
    """


class TelemetryError(CarewatchError):
    """A write to (or query of) InfluxDB failed.

    ``retryable`` tells the caller what to do with the batch: True for connection
    errors, timeouts, HTTP 5xx and 429 (keep it and try again later), False for what
    a retry cannot fix (400 bad or partially written points, 401/403 credentials, 404
    database or bucket not found, 413 too large). ``status`` is the HTTP status (None
    when no answer came) and ``body`` InfluxDB's error text. ``partial`` is True for
    InfluxDB's "partial write" (the valid points of the batch *were* written; ``dropped``
    counts the others), ``retry_after`` the seconds a 429/503 answer asked to wait.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        body: str = "",
        url: str = "",
        partial: bool = False,
        dropped: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retryable = retryable
        self.status = status
        self.body = body
        self.url = url
        self.partial = partial
        self.dropped = dropped
        self.retry_after = retry_after
        self.message = message
        super().__init__(message)
