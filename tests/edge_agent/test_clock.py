"""Clock sanity with injected wall, monotonic and sync sources."""

from __future__ import annotations

from edge_agent.clock import BUILD_FLOOR_MS, Clock, kernel_synchronized

REAL = BUILD_FLOOR_MS + 400 * 86_400_000  # "now" in these tests


class FakeTime:
    def __init__(self, wall_ms: int, mono: float = 100.0):
        self.wall_ms = wall_ms
        self.mono_s = mono
        self.synced = False

    def wall(self) -> float:
        return self.wall_ms / 1000

    def mono(self) -> float:
        return self.mono_s

    def advance(self, seconds: float, wall: bool = True) -> None:
        self.mono_s += seconds
        if wall:
            self.wall_ms += int(seconds * 1000)


def make(t: FakeTime, **kw) -> Clock:
    kw.setdefault("trust", "auto")
    return Clock(sync_probe=lambda: t.synced, wall=t.wall, mono=t.mono, **kw)


def test_boot_in_1970_is_estimated_from_the_last_trusted_time_and_marked():
    t = FakeTime(wall_ms=5_000)  # a Pi without RTC
    last = REAL - 3_600_000
    c = make(t, last_trusted_ms=last)
    s1 = c.now()
    assert not s1.ok and s1.ms == last
    t.advance(10)
    s2 = c.now()
    assert not s2.ok and s2.ms == last + 10_000
    # a clock that was synchronized long ago but is still 1970 is not trusted either
    t.synced = True
    c._next_probe = float("-inf")
    assert not c.now().ok


def test_sync_jumps_forward_and_reports_the_correction():
    t = FakeTime(wall_ms=REAL - 86_400_000 * 30)  # fake-hwclock: a month old, not synced
    c = make(t, last_trusted_ms=REAL - 86_400_000 * 30)
    seen: list[int] = []
    c.on_trusted = seen.append
    t.advance(5)
    before = c.now()
    assert not before.ok
    t.wall_ms = REAL  # NTP answered
    t.synced = True
    t.advance(5.0)  # probe is rate-limited: next check after 5 s
    after = c.now()
    assert after.ok and after.ms == REAL + 5000
    assert seen and seen[0] == c.correction_ms
    # the estimate for the same instant would have been before.ms + 5 s
    assert c.correction_ms == (REAL + 5000) - (before.ms + 5000)


def test_never_backwards():
    t = FakeTime(wall_ms=REAL)
    c = make(t, trust="always")
    a = c.now()
    t.wall_ms -= 2_000  # NTP steps back two seconds
    b = c.now()
    assert b.ms >= a.ms and b.ok
    t.wall_ms -= 86_400_000  # a wild step back a day: not trusted, still not backwards
    t.advance(1, wall=False)
    d = c.now()
    assert not d.ok and d.ms >= b.ms


def test_floor_and_modes():
    t = FakeTime(wall_ms=BUILD_FLOOR_MS - 1000)
    assert not make(t, trust="always").now().ok  # before the floor
    t.wall_ms = REAL
    assert make(t, trust="always").now().ok
    t.synced = True
    assert not make(t, trust="never").now().ok
    assert make(t, trust="auto").now().ok


def test_probe_errors_mean_untrusted():
    def boom() -> bool:
        raise OSError("no")

    t = FakeTime(wall_ms=REAL)
    c = Clock(trust="auto", sync_probe=boom, wall=t.wall, mono=t.mono)
    assert not c.now().ok


def test_kernel_probe_answers_or_says_unknown():
    assert kernel_synchronized() in (True, False, None)


def test_a_restart_without_ntp_continues_from_the_last_issued_stamp():
    t = FakeTime(wall_ms=5_000)  # a Pi without RTC, NTP unreachable
    last = REAL - 3_600_000
    c = make(t, last_trusted_ms=last)
    t.advance(600)  # ten minutes of untrusted stamps
    issued = c.now_ms()
    assert issued == last + 600_000
    # the restart: the next run must not stamp earlier than the previous run did
    t2 = FakeTime(wall_ms=5_000)
    c2 = make(t2, last_trusted_ms=last, last_issued_ms=issued)
    s = c2.now()
    assert not s.ok and s.ms == issued
    t2.advance(1)
    assert c2.now_ms() == issued + 1000
