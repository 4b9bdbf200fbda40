"""Test harness: real Mosquitto and InfluxDB processes, free ports, polling helpers."""

from tests.harness.services import (
    InfluxDBService,
    MosquittoService,
    ServiceError,
    free_port,
    mqtt_connack,
    mqtt_ping,
    write_password_file,
)
from tests.harness.wait import WaitTimeout, async_wait_for, wait_for

__all__ = [
    "InfluxDBService",
    "MosquittoService",
    "ServiceError",
    "WaitTimeout",
    "async_wait_for",
    "free_port",
    "mqtt_connack",
    "mqtt_ping",
    "wait_for",
    "write_password_file",
]
