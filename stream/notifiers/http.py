"""HTTP notifiers: a generic signed JSON webhook and the WeCom / DingTalk group robots.

Generic webhook
    POSTs the notification document as is (see :func:`stream.alerts.notification_payload`)
    with these headers:

    - ``X-Carewatch-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with
      the notifier's ``secret`` (only when a secret is configured);
    - ``Idempotency-Key: <outbox id>``: the same for every resend of one notification.
      The sender resends when it cannot know whether a delivery landed (a crash between
      the receiver's 200 and the bookkeeping, a timeout): a receiver that drops a key it
      has already processed sees every notification exactly once;
    - ``X-Carewatch-Event``: the transition (raised, escalated, acknowledged...).

    2xx is delivered; 408, 425, 429 and 5xx, timeouts and connection errors are
    retried; any other status is a permanent failure (the URL or secret is wrong).

WeCom group robot (企业微信群机器人)
    ``POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY`` with
    ``{"msgtype": "markdown", "markdown": {"content": "..."}}``; the answer is
    ``{"errcode": 0, "errmsg": "ok"}`` on success. The robot accepts 20 messages a minute:
    errcode 45009 (frequency limit) is retried.

DingTalk custom robot (钉钉自定义机器人)
    ``POST https://oapi.dingtalk.com/robot/send?access_token=TOKEN`` with
    ``{"msgtype": "markdown", "markdown": {"title": "...", "text": "..."}}``. With a
    signing secret ("加签"), ``&timestamp=<ms>&sign=<s>`` are appended, where ``s`` is
    the URL-encoded base64 of HMAC-SHA256(key=secret, message=f"{timestamp}\\n{secret}").
    errcode 0 is success; 130101 (sending too fast) is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp

from stream.config import NotifierConfig
from stream.notifiers import render
from stream.notifiers.base import Notification, Notifier, NotifyError

RETRYABLE_STATUS = frozenset({408, 425, 429})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
# Group robots answer HTTP 200 with an errcode; these mean "later", not "never".
WECOM_RETRYABLE = frozenset({-1, 45009, 45033})  # busy, frequency limit, too many calls
DINGTALK_RETRYABLE = frozenset({-1, 130101, 130102})  # busy, too fast


def sign_body(secret: str, body: bytes) -> str:
    """The ``X-Carewatch-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """Check a ``X-Carewatch-Signature`` header (for receivers; constant time)."""
    return hmac.compare_digest(sign_body(secret, body), header)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature (URL-encoded), per its "加签" documentation."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


class HttpNotifier(Notifier):
    """Common HTTP plumbing: one session, a timeout, status classification."""

    def __init__(self, config: NotifierConfig) -> None:
        super().__init__(config.name)
        if not config.url:
            raise ValueError("url is required")
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {config.url!r}: expected http(s)://host/...")
        for header, value in config.headers.items():
            # aiohttp would refuse these on every send; say so at start (and --check).
            if not _TOKEN.fullmatch(header):
                raise ValueError(f"headers: {header!r} is not a valid HTTP header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"headers.{header}: a value cannot contain line breaks")
        if config.timeout_ms <= 0:
            raise ValueError("timeout must be more than 0")
        self.config = config
        self.url = config.url
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_ms / 1000)
            self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        await self.start()
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise NotifyError(f"{self.name}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise NotifyError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    def _check_status(self, status: int, answer: bytes) -> None:
        if 200 <= status < 300:
            return
        text = answer[:200].decode("utf-8", "replace")
        retryable = status in RETRYABLE_STATUS or status >= 500
        raise NotifyError(f"{self.name}: HTTP {status}: {text}", retryable=retryable)


class WebhookNotifier(HttpNotifier):
    """Generic signed JSON webhook (see the module docstring)."""

    async def send(self, notification: Notification) -> None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notification.outbox_id,
            "X-Carewatch-Event": notification.event,
            **self.config.headers,
        }
        if self.config.secret:
            headers["X-Carewatch-Signature"] = sign_body(self.config.secret, notification.payload)
        status, answer = await self._post(self.url, notification.payload, headers)
        self._check_status(status, answer)


def _robot_answer(name: str, answer: bytes, retryable_codes: frozenset[int]) -> None:
    try:
        data: Any = json.loads(answer or b"{}")
    except ValueError as exc:
        raise NotifyError(f"{name}: answer is not JSON: {answer[:200]!r}") from exc
    code = data.get("errcode", 0) if isinstance(data, dict) else 0
    if code == 0:
        return
    message = data.get("errmsg", "") if isinstance(data, dict) else ""
    raise NotifyError(f"{name}: errcode {code}: {message}", retryable=code in retryable_codes)


class WeComNotifier(HttpNotifier):
    """WeCom (企业微信) group robot, markdown messages."""

    MAX_BYTES = 4096  # the robot rejects longer markdown content

    async def send(self, notification: Notification) -> None:
        content = render.markdown(notification.body)
        encoded = content.encode()
        if len(encoded) > self.MAX_BYTES:
            content = encoded[: self.MAX_BYTES - 3].decode("utf-8", "ignore") + "..."
        message = {"msgtype": "markdown", "markdown": {"content": content}}
        body = json.dumps(message, ensure_ascii=False).encode()
        status, answer = await self._post(
            self.url, body, {"Content-Type": "application/json", **self.config.headers}
        )
        self._check_status(status, answer)
        _robot_answer(self.name, answer, WECOM_RETRYABLE)


class DingTalkNotifier(HttpNotifier):
    """DingTalk (钉钉) custom robot, markdown messages, optional signing secret."""

    def signed_url(self, timestamp_ms: int | None = None) -> str:
        """The webhook URL, with ``timestamp`` and ``sign`` when a secret is configured."""
        if not self.config.secret:
            return self.url
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}timestamp={ts}&sign={dingtalk_sign(self.config.secret, ts)}"

    async def send(self, notification: Notification) -> None:
        body_doc = notification.body
        message = {
            "msgtype": "markdown",
            "markdown": {"title": render.title(body_doc), "text": render.markdown(body_doc)},
        }
        body = json.dumps(message, ensure_ascii=False).encode()
        status, answer = await self._post(
            self.signed_url(), body, {"Content-Type": "application/json", **self.config.headers}
        )
        self._check_status(status, answer)
        _robot_answer(self.name, answer, DINGTALK_RETRYABLE)
