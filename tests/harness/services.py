"""The service managers live in :mod:`carewatch.services` (the demo and benchmarks use them
too); this module keeps the test suite's import path."""

from carewatch.services import (
    DEPLOY,
    INFLUXDB_TEMPLATE,
    MOSQUITTO_TEMPLATE,
    REPO,
    InfluxDBService,
    ManagedProcess,
    MosquittoService,
    ServiceError,
    find_binary,
    free_port,
    mqtt_connack,
    mqtt_ping,
    render_template,
    write_password_file,
)

__all__ = [
    "DEPLOY",
    "INFLUXDB_TEMPLATE",
    "MOSQUITTO_TEMPLATE",
    "REPO",
    "InfluxDBService",
    "ManagedProcess",
    "MosquittoService",
    "ServiceError",
    "find_binary",
    "free_port",
    "mqtt_connack",
    "mqtt_ping",
    "render_template",
    "write_password_file",
]
