"""Writing line protocol to InfluxDB over its HTTP API (1.x, 2.x and 3.x).

Two write APIs, chosen with :attr:`InfluxTarget.api`:

- ``v1``: ``POST /write?db=&rp=&precision=ms`` (InfluxDB 1.x, and the 1.x-compatible
  endpoint of 2.x and 3.x). Credentials as HTTP basic auth (default) or as ``u``/``p``
  query parameters; or a token (``Authorization: Token ...``) for 2.x/3.x.
- ``v2``: ``POST /api/v2/write?org=&bucket=&precision=ms`` with
  ``Authorization: Token ...`` (InfluxDB 2.x and 3.x; 3.x ignores ``org``).

:class:`InfluxWriter` sends batches and turns every failure into a
:class:`~stream.telemetry.errors.TelemetryError` that says whether retrying can help:

========================================  ===========
failure                                   retryable
========================================  ===========
connection refused / reset, DNS, timeout  yes
HTTP 5xx, 429 (``retry_after`` if sent)   yes
HTTP 400 (bad line, partial write)        no
HTTP 401 / 403 (credentials)              no
HTTP 404 (database / bucket not found)    no
HTTP 413 (body too large)                 no
========================================  ===========

The writer keeps no state between calls: spooling failed batches to disk and
backfilling them is the stream runtime's job. Writes are idempotent in InfluxDB (the
same series and time overwrite), so re-sending a batch after a partial failure is safe.

:class:`LineBatcher` is the pure batching policy (a size cap and a linger time) the
runtime drives with its own clock. :func:`influxql_query` is a small synchronous InfluxQL
client for tests, tools and dashboards' checks.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import aiohttp

from device_profiles.errors import ConfigError
from stream.telemetry.errors import TelemetryError

Api = Literal["v1", "v2"]
V1Auth = Literal["basic", "params"]

_RETRYABLE_STATUS = frozenset({429})
_PARTIAL_DROPPED = re.compile(r"dropped=(\d+)")


@dataclass(frozen=True)
class InfluxTarget:
    """Where and how to write: URL, API flavour, database or bucket, credentials.

    Raises :class:`~device_profiles.errors.ConfigError` naming the option when a
    required one is missing (``database`` for v1, ``bucket`` for v2) or a value is not
    allowed.
    """

    url: str = "http://127.0.0.1:8086"
    api: Api = "v1"
    # v1
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    v1_auth: V1Auth = "basic"
    # v2 / v3
    org: str | None = None
    bucket: str | None = None
    # v2 / v3, and v1 against the 1.x-compatible API of InfluxDB 2.x / 3.x
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"{self.url!r}: expected http://host:port or https://host:port", path="url"
            )
        if self.api not in ("v1", "v2"):
            raise ConfigError(f"{self.api!r}: allowed are 'v1' and 'v2'", path="api")
        if self.v1_auth not in ("basic", "params"):
            raise ConfigError(f"{self.v1_auth!r}: allowed are 'basic' and 'params'", path="v1_auth")
        if self.api == "v1" and not self.database:
            raise ConfigError("api v1 needs a database", path="database")
        if self.api == "v2" and not self.bucket:
            raise ConfigError("api v2 needs a bucket (and org for InfluxDB 2.x)", path="bucket")
        if (self.username is None) != (self.password is None):
            raise ConfigError("username and password go together", path="password")

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash."""
        return self.url.rstrip("/")

    def auth_headers(self) -> dict[str, str]:
        """Authorization headers for this target (empty when none are needed)."""
        if self.token:
            return {"Authorization": f"Token {self.token}"}
        if self.api == "v1" and self.username is not None and self.v1_auth == "basic":
            raw = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def auth_params(self) -> dict[str, str]:
        """``u``/``p`` query parameters, when v1 credentials are sent that way."""
        if (
            self.api == "v1"
            and not self.token
            and self.username is not None
            and self.v1_auth == "params"
        ):
            return {"u": self.username, "p": self.password or ""}
        return {}


@dataclass(frozen=True)
class WriteRequest:
    """One HTTP write, fully built (what :class:`InfluxWriter` sends)."""

    url: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    lines: int

    @property
    def full_url(self) -> str:
        """URL with the query string (credentials in ``p`` masked: for messages)."""
        shown = {k: ("***" if k == "p" else v) for k, v in self.params.items()}
        return f"{self.url}?{urllib.parse.urlencode(shown)}"


def build_write_request(
    target: InfluxTarget, lines: Sequence[str], *, compress: bool = False
) -> WriteRequest:
    """The HTTP request that writes ``lines`` (ms precision) to ``target``. Pure."""
    if target.api == "v1":
        url = f"{target.base_url}/write"
        params: dict[str, str] = {"db": target.database or "", "precision": "ms"}
        if target.retention_policy:
            params["rp"] = target.retention_policy
        params.update(target.auth_params())
    else:
        url = f"{target.base_url}/api/v2/write"
        params = {"bucket": target.bucket or "", "precision": "ms"}
        if target.org:
            params["org"] = target.org
    headers = {"Content-Type": "text/plain; charset=utf-8", **target.auth_headers()}
    body = ("\n".join(lines) + "\n").encode("utf-8")
    if compress:
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return WriteRequest(url=url, params=params, headers=headers, body=body, lines=len(lines))


def chunk_lines(lines: Sequence[str], max_lines: int, max_bytes: int) -> Iterator[list[str]]:
    """Split ``lines`` into batches of at most ``max_lines`` lines and about ``max_bytes``.

    A single line longer than ``max_bytes`` still goes out alone (InfluxDB decides).
    """
    batch: list[str] = []
    size = 0
    for line in lines:
        n = len(line) + 1
        if batch and (len(batch) >= max_lines or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += n
    if batch:
        yield batch


def influx_error_message(body: str) -> str:
    """InfluxDB's error text from a response body (1.x ``error``, 2.x/3.x ``message``)."""
    text = body.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return text[:500]


def classify_status(
    status: int, body: str, *, url: str = "", retry_after: float | None = None
) -> TelemetryError:
    """The :class:`TelemetryError` for a non-2xx answer (see the module table)."""
    message = influx_error_message(body)
    retryable = status >= 500 or status in _RETRYABLE_STATUS
    if status in (401, 403):
        what = "credentials refused"
    elif status == 404:
        what = "database or bucket not found"
    elif status == 400 and "partial write" in message:
        what = "partial write (the other points were written)"
    elif status == 400:
        what = "points rejected"
    elif status == 413:
        what = "request body too large"
    elif status == 429:
        what = "too many requests"
    elif retryable:
        what = "server error"
    else:
        what = "request refused"
    partial = status == 400 and "partial write" in message
    match = _PARTIAL_DROPPED.search(message) if partial else None
    return TelemetryError(
        f"InfluxDB write {what}: HTTP {status}: {message}",
        retryable=retryable,
        status=status,
        body=message,
        url=url,
        partial=partial,
        dropped=int(match.group(1)) if match else None,
        retry_after=retry_after,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for InfluxDB; the caller's backoff applies


class InfluxWriter:
    """Async writer of line protocol batches to one :class:`InfluxTarget`.

    ``await writer.write(lines)`` sends the lines in chunks of at most ``batch_lines``
    lines / ``batch_bytes`` bytes and returns when InfluxDB accepted all of them, or
    raises :class:`TelemetryError` at the first chunk that failed (earlier chunks are
    written; re-sending all is safe). Each request has ``timeout`` seconds in total.
    Use as ``async with InfluxWriter(...) as writer`` or call :meth:`close`.
    """

    def __init__(
        self,
        target: InfluxTarget,
        *,
        timeout: float = 10.0,
        compress: bool = False,
        batch_lines: int = 5000,
        batch_bytes: int = 4 * 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"{timeout!r}: must be > 0 seconds", path="timeout")
        if batch_lines < 1:
            raise ConfigError(f"{batch_lines!r}: must be >= 1", path="batch_lines")
        self.target = target
        self.timeout = timeout
        self.compress = compress
        self.batch_lines = batch_lines
        self.batch_bytes = batch_bytes
        self._session = session
        self._own_session = session is None
        self.requests = 0
        """Write requests sent (successful or not), for metrics and tests."""
        self.lines_written = 0
        """Lines InfluxDB accepted."""

    async def __aenter__(self) -> InfluxWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if the writer created it."""
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def write(self, lines: Sequence[str]) -> None:
        """Write ``lines`` (line protocol, ms timestamps); raises :class:`TelemetryError`."""
        for chunk in chunk_lines(lines, self.batch_lines, self.batch_bytes):
            await self._send(build_write_request(self.target, chunk, compress=self.compress))

    async def _send(self, request: WriteRequest) -> None:
        shown = request.full_url
        self.requests += 1
        try:
            async with self._client().post(
                request.url,
                params=dict(request.params),
                headers=dict(request.headers),
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                if 200 <= response.status < 300:
                    self.lines_written += request.lines
                    return
                body = await response.text(errors="replace")
                raise classify_status(
                    response.status,
                    body,
                    url=shown,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            raise TelemetryError(
                f"InfluxDB write timed out after {self.timeout:g} s ({shown})",
                retryable=True,
                url=shown,
            ) from None
        except aiohttp.ClientError as exc:
            # Connection refused or reset, DNS failure, server gone mid-answer.
            raise TelemetryError(
                f"InfluxDB unreachable: {type(exc).__name__}: {exc} ({shown})",
                retryable=True,
                url=shown,
            ) from exc


@dataclass
class LineBatcher:
    """When to flush buffered lines: ``max_lines`` reached, or ``linger`` seconds passed.

    Pure: the caller passes the time (any monotonic clock, in seconds), so a runtime can
    drive it from its own clock and tests from a fake one::

        batcher.add(lines, now)
        if batcher.due(now):
            await writer.write(batcher.take())
    """

    max_lines: int = 5000
    linger: float = 1.0
    _lines: list[str] = field(default_factory=list)
    _since: float | None = None

    def add(self, lines: Sequence[str], now: float) -> None:
        """Buffer ``lines``; the linger time runs from the first buffered line."""
        if lines and self._since is None:
            self._since = now
        self._lines.extend(lines)

    def due(self, now: float) -> bool:
        """True when the buffer should be flushed now."""
        if not self._lines:
            return False
        assert self._since is not None
        return len(self._lines) >= self.max_lines or now - self._since >= self.linger

    def deadline(self) -> float | None:
        """When the linger time of the buffered lines ends (None when empty)."""
        return None if self._since is None else self._since + self.linger

    def take(self) -> list[str]:
        """Remove and return everything buffered."""
        lines, self._lines, self._since = self._lines, [], None
        return lines

    def __len__(self) -> int:
        return len(self._lines)


def influxql_query(
    target: InfluxTarget,
    q: str,
    *,
    db: str | None = None,
    epoch: str | None = "ms",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Run InfluxQL over ``/query`` (synchronously) and return the parsed JSON answer.

    ``db`` defaults to the target's database (v1) or bucket (v2/v3, whose 1.x-compatible
    ``/query`` maps databases to buckets). Times come back as integers in ``epoch``
    units. Raises :class:`TelemetryError` for transport and HTTP errors and for a
    statement error inside the answer (``retryable`` False).
    """
    params = {"q": q}
    database = db if db is not None else (target.database or target.bucket)
    if database:
        params["db"] = database
    if epoch:
        params["epoch"] = epoch
    headers = {"Content-Type": "application/x-www-form-urlencoded", **target.auth_headers()}
    url = f"{target.base_url}/query"
    # InfluxDB 1.x reads u/p from the URL only, not from a form body.
    credentials = target.auth_params()
    request = urllib.request.Request(
        f"{url}?{urllib.parse.urlencode(credentials)}" if credentials else url,
        data=urllib.parse.urlencode(params).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        error = classify_status(exc.code, exc.read().decode(errors="replace"), url=url)
        raise TelemetryError(
            f"InfluxQL {q!r} failed: HTTP {exc.code}: {error.body}",
            retryable=error.retryable,
            status=exc.code,
            body=error.body,
            url=url,
        ) from None
    except (OSError, ValueError) as exc:
        raise TelemetryError(
            f"InfluxQL {q!r} failed: {type(exc).__name__}: {exc}", retryable=True, url=url
        ) from exc
    problems = [r["error"] for r in answer.get("results", []) if "error" in r]
    if "error" in answer:
        problems.append(answer["error"])
    if problems:
        raise TelemetryError(
            f"InfluxQL {q!r} failed: {'; '.join(map(str, problems))}",
            retryable=False,
            body="; ".join(map(str, problems)),
            url=url,
        )
    return answer


def query_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten an InfluxQL answer into rows (column -> value), with each series' name
    under ``"_measurement"`` and its ``GROUP BY`` tags merged in."""
    rows: list[dict[str, Any]] = []
    for result in answer.get("results", []):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                row = {"_measurement": series.get("name")}
                row.update(zip(series["columns"], values, strict=True))
                row.update(tags)
                rows.append(row)
    return rows


async def ping(target: InfluxTarget) -> bool:
    """True when ``GET /ping`` answers 2xx within 2 s (1.x answers 204; start-up checks)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{target.base_url}/ping", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response,
        ):
            return 200 <= response.status < 300
    except (aiohttp.ClientError, TimeoutError):
        return False
