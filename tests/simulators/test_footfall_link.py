"""The PTY link (simulators.pty): a raw null-modem cable between two paths, with faults."""

from __future__ import annotations

import os
import select
import termios
import time
from collections.abc import Iterator

import pytest

from simulators.pty import DEFAULT_GARBAGE, PtyLink

pytestmark = pytest.mark.integration

REQUEST = bytes.fromhex("010300000002c40b")  # read 2 holding registers from unit 1
RESPONSE = bytes.fromhex("01030400050007abf0")


def open_port(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


def read_exactly(fd: int, n: int, timeout: float = 5.0) -> bytes:
    """Read ``n`` bytes or fail after ``timeout`` (generous: only a hang trips it)."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"got {data!r}, wanted {n} bytes"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data += os.read(fd, n - len(data))
    return data


def nothing_arrives(fd: int, wait: float = 0.2) -> bool:
    """True when no byte arrives within ``wait`` (used only to show absence)."""
    ready, _, _ = select.select([fd], [], [], wait)
    return not ready


@pytest.fixture
def ends() -> Iterator[tuple[PtyLink, int, int]]:
    with PtyLink() as link:
        dev, cli = open_port(link.device_path), open_port(link.client_path)
        try:
            yield link, dev, cli
        finally:
            os.close(dev)
            os.close(cli)


def test_bytes_cross_both_ways_unchanged_and_without_echo(ends) -> None:
    link, dev, cli = ends
    os.write(cli, REQUEST)
    assert read_exactly(dev, len(REQUEST)) == REQUEST
    every_byte = bytes(range(256))  # raw mode: no CR/LF translation, no control chars eaten
    os.write(dev, every_byte)
    assert read_exactly(cli, 256) == every_byte
    assert nothing_arrives(cli, 0.05)  # the request was not echoed back to its sender
    assert nothing_arrives(dev, 0.05)
    assert (link.stats.to_device, link.stats.to_client) == (len(REQUEST), 256)


def test_both_ends_are_raw_without_echo(ends) -> None:
    _, dev, cli = ends
    for fd in (dev, cli):
        lflag = termios.tcgetattr(fd)[3]
        assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)


def test_silence_drops_everything_until_lifted(ends) -> None:
    link, dev, cli = ends
    link.silence()
    assert link.silent
    os.write(cli, REQUEST)
    os.write(dev, RESPONSE)
    assert nothing_arrives(dev)
    assert nothing_arrives(cli, 0.05)
    assert link.stats.dropped == len(REQUEST) + len(RESPONSE)
    link.silence(False)
    os.write(cli, REQUEST)
    assert read_exactly(dev, len(REQUEST)) == REQUEST


def test_garbage_goes_in_front_of_the_next_response(ends) -> None:
    link, dev, cli = ends
    link.inject_garbage()
    os.write(dev, RESPONSE)
    got = read_exactly(cli, len(DEFAULT_GARBAGE) + len(RESPONSE))
    assert got == DEFAULT_GARBAGE + RESPONSE
    os.write(dev, RESPONSE)  # once only
    assert read_exactly(cli, len(RESPONSE)) == RESPONSE


def test_garbage_now_arrives_unsolicited(ends) -> None:
    link, _, cli = ends
    link.inject_garbage(b"\xde\xad", now=True)
    assert read_exactly(cli, 2) == b"\xde\xad"
    assert link.stats.garbage == 2


def test_corrupt_and_truncate_spoil_exactly_the_next_responses(ends) -> None:
    link, dev, cli = ends
    link.corrupt_next(2)
    for _ in range(2):
        os.write(dev, RESPONSE)
        got = read_exactly(cli, len(RESPONSE))
        assert got[:-1] == RESPONSE[:-1]
        assert got[-1] != RESPONSE[-1]
    link.truncate_next()
    os.write(dev, RESPONSE)
    assert read_exactly(cli, len(RESPONSE) // 2) == RESPONSE[: len(RESPONSE) // 2]
    assert nothing_arrives(cli, 0.1)
    os.write(dev, RESPONSE)
    assert read_exactly(cli, len(RESPONSE)) == RESPONSE
    assert (link.stats.corrupted, link.stats.truncated) == (2, 1)


def test_delay_holds_responses_and_keeps_their_order(ends) -> None:
    link, dev, cli = ends
    link.delay(0.3)
    os.write(dev, b"first")
    assert nothing_arrives(cli, 0.1)  # well before the delay ends
    link.delay(0)  # a later chunk must not overtake the held one
    os.write(dev, b"second")
    assert read_exactly(cli, 11) == b"firstsecond"


def test_clear_faults_forgets_pending_faults(ends) -> None:
    link, dev, cli = ends
    link.corrupt_next()
    link.truncate_next()
    link.inject_garbage()
    link.silence()
    link.clear_faults()
    os.write(dev, RESPONSE)
    assert read_exactly(cli, len(RESPONSE)) == RESPONSE


def test_a_side_may_close_and_reopen_its_port(ends) -> None:
    link, dev, cli = ends
    fd = open_port(link.device_path)
    os.close(fd)
    os.write(cli, REQUEST)  # the bridge must not see a hang-up when a side closes
    assert read_exactly(dev, len(REQUEST)) == REQUEST


def test_flush_discards_requests_nobody_read() -> None:
    with PtyLink() as link:
        cli = open_port(link.client_path)
        try:
            os.write(cli, REQUEST)
            deadline = time.monotonic() + 5
            while link.stats.to_device < len(REQUEST):  # wait for the bridge to copy it
                assert time.monotonic() < deadline
                time.sleep(0.01)
            link.flush_device_input()
            dev = open_port(link.device_path)
            try:
                assert nothing_arrives(dev, 0.1)
            finally:
                os.close(dev)
        finally:
            os.close(cli)


def test_close_is_idempotent_and_releases_descriptors() -> None:
    before = len(os.listdir("/proc/self/fd"))
    link = PtyLink()
    link.close()
    link.close()
    assert link.closed
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda link: link.corrupt_next(0),
        lambda link: link.truncate_next(-1),
        lambda link: link.delay(-0.1),
        lambda link: link.inject_garbage(b""),
    ],
)
def test_bad_fault_arguments_are_refused(call) -> None:
    with PtyLink() as link, pytest.raises(ValueError):
        call(link)
