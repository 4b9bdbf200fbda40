"""Shared pytest fixtures: real Mosquitto and InfluxDB servers, unique names per test.

Fixture API (the contract other test modules build on):

``mosquitto`` (session)
    A running :class:`~tests.harness.services.MosquittoService`: ``.host``, ``.port``,
    ``.url`` (``mqtt://127.0.0.1:PORT``). Shared by all tests: never stop it; use
    ``broker_factory`` for outage tests.
``broker_factory`` (function)
    ``broker_factory()`` starts a fresh broker on a free port and returns it
    (``.stop()``, ``.start()`` on the same port, ``.restart()``, ``.kill()``, ``.host``,
    ``.port``, ``.url``, ``.log_text()``). Every broker it made is closed at teardown.
    Options: ``anonymous=False``, ``extra_config="password_file ...\nacl_file ..."``
    (see ``tests.harness.write_password_file`` and ``tests/test_harness_acl.py``).
``influxdb`` (session)
    A running :class:`~tests.harness.services.InfluxDBService`: ``.url``
    (``http://127.0.0.1:PORT``), ``.host``, ``.port``, ``.query(q, db)`` -> parsed JSON,
    ``.rows(q, db)`` -> list of dicts, ``.write(lines, db)``, ``.create_database(name)``,
    ``.databases()``.
``influxdb_factory`` (function)
    ``influxdb_factory(auth=False, username=..., password=...)`` starts a fresh InfluxDB
    (stoppable and restartable on the same port); closed at teardown.
``influx_database`` (function)
    The name of a new, empty database on the session ``influxdb``.
``topic_prefix`` (function)
    A unique topic level per test, ``t-<hex>``, so tests sharing a broker never see each
    other's messages.

Servers that cannot start (or whose binaries are missing) make the tests that need them
FAIL with a message naming the Debian package: the suite must not silently skip them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.services import InfluxDBService, MosquittoService, ServiceError

BrokerFactory = Callable[..., MosquittoService]
InfluxFactory = Callable[..., InfluxDBService]


def _started(make: Callable[[], MosquittoService | InfluxDBService]) -> Any:
    """Create and start a service, turning harness errors into a clear test failure."""
    try:
        service = make()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        service.start()
    except ServiceError as exc:
        service.close()
        pytest.fail(str(exc), pytrace=False)
    return service


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoService]:
    """A Mosquitto broker shared by the whole test session (do not stop it)."""
    broker: MosquittoService = _started(MosquittoService)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def broker_factory() -> Iterator[BrokerFactory]:
    """Start fresh, stoppable brokers: ``broker = broker_factory()``."""
    made: list[MosquittoService] = []

    def make(**kwargs: Any) -> MosquittoService:
        broker: MosquittoService = _started(lambda: MosquittoService(**kwargs))
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in made:
            broker.close()


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxDBService]:
    """An InfluxDB 1.x server shared by the whole test session (do not stop it)."""
    server: InfluxDBService = _started(InfluxDBService)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def influxdb_factory() -> Iterator[InfluxFactory]:
    """Start fresh, stoppable InfluxDB servers: ``server = influxdb_factory(auth=True)``."""
    made: list[InfluxDBService] = []

    def make(**kwargs: Any) -> InfluxDBService:
        server: InfluxDBService = _started(lambda: InfluxDBService(**kwargs))
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


@pytest.fixture
def influx_database(influxdb: InfluxDBService) -> str:
    """A new, empty database on the session InfluxDB, unique to this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    return name


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic level for this test, e.g. ``t-3f9a1c2b7d4e``."""
    return f"t-{uuid.uuid4().hex[:12]}"
