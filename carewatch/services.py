"""Real Mosquitto and InfluxDB processes, for the test suite, the benchmarks and the demo.

Each service renders its configuration from a template kept in ``deploy/`` (so the tests
exercise the same files operators read), starts the server as a plain child process on a
free loopback port with its data in a temporary directory, and waits until it really
answers: an MQTT CONNACK for Mosquitto, ``GET /ping -> 204`` for InfluxDB. A server that
does not come up raises :class:`ServiceError` carrying the tail of its log.

Services never touch a system-wide broker or database (a system Mosquitto may listen on
127.0.0.1:1883): every listener is on a port chosen by :func:`free_port`.

Every started process is also registered for an ``atexit`` clean-up, so a test run that
ends abnormally (an exception in a fixture, ``KeyboardInterrupt``) does not leave servers
behind. The pytest fixtures in ``tests/conftest.py`` additionally stop them in finalizers.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
MOSQUITTO_TEMPLATE = DEPLOY / "mosquitto" / "test.conf"
INFLUXDB_TEMPLATE = DEPLOY / "influxdb" / "test.conf"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServiceError(RuntimeError):
    """A test service is missing, did not start, or answered unexpectedly."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The kernel picks it (bind to port 0). Another process could still take it before
    the caller binds; services retry their first start on a new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, package: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """Locate a server binary or raise a :class:`ServiceError` naming its Debian package.

    ``/usr/sbin`` is not on every user's ``PATH`` (Mosquitto installs there), hence the
    extra directories.
    """
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError(
        f"{name!r} was not found on PATH or in {', '.join(extra_dirs) or 'the usual places'}. "
        f"Install the Debian package {package!r} (sudo apt-get install -y {package}), "
        "or run ./scripts/test.sh as root, which installs the packages mosquitto and influxdb."
    )


def render_template(template: Path, values: dict[str, str]) -> str:
    """Fill the ``${name}`` placeholders of a config template; a missing value is an error."""
    # safe_substitute leaves a lone "$" (or "${...}" in a comment) alone; any real
    # placeholder left over afterwards is a template/harness mismatch.
    text = string.Template(template.read_text(encoding="utf-8")).safe_substitute(values)
    left = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)))
    if left:
        raise ServiceError(f"{template}: no value for placeholder(s) {', '.join(left)}")
    return text


def listening_pid_owns(pid: int, host: str, port: int) -> bool:
    """True when process ``pid`` holds a listening TCP socket on ``host:port`` (Linux).

    Compares the socket inodes in ``/proc/<pid>/fd`` with the LISTEN entries of
    ``/proc/net/tcp``. Without ``/proc`` it answers True and readiness rests on the
    protocol check alone.
    """
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return not Path("/proc/self").exists()
    inodes: set[str] = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    # /proc prints the address as a native-endian 32-bit number in hex.
    wanted_ip = "{:08X}".format(*struct.unpack("=I", socket.inet_aton(host)))
    for line in table:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        ip, _, hex_port = local.partition(":")
        if (
            state == "0A"  # TCP_LISTEN
            and int(hex_port, 16) == port
            and ip in (wanted_ip, "00000000")
            and inode in inodes
        ):
            return True
    return False


# --- process bookkeeping ------------------------------------------------------------

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        services = list(_live)
    for service in services:
        with contextlib.suppress(Exception):
            service.close()


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """A server child process with a config, a data directory and a log file.

    Subclasses implement :meth:`_command`, :meth:`_render` and :meth:`_ready`. The
    directory survives :meth:`stop` / :meth:`start` cycles (that is the point of restart
    tests) and is removed by :meth:`close`.
    """

    name: ClassVar[str] = "service"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"carewatch-{self.name}-"))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.log_file = self.workdir / f"{self.name}.log"
        self.config_file = self.workdir / f"{self.name}.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._started_once = False

    # hooks ------------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _render(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server answers its protocol (called repeatedly while starting)."""
        raise NotImplementedError

    def _reassign_ports(self) -> None:
        """Pick new ports after an 'address in use' failure (first start only)."""
        self.port = free_port(self.host)

    # public API -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the process is alive (not whether it answers)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self.running and self._proc else None

    def log_text(self, tail: int = 60) -> str:
        """The last ``tail`` lines of the server log (for failure messages)."""
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(lines[-tail:])

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        if self._closed:
            raise ServiceError(f"{self.name} on port {self.port} was closed; create a new one")
        if self.running:
            return
        # The first start may lose a race for the free port; a restart must keep its port
        # because clients are configured with it.
        attempts = 1 if (self._fixed_port or self._started_once) else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(timeout)
                self._started_once = True
                return
            except ServiceError:
                if attempt + 1 < attempts and "address already in use" in self.log_text().lower():
                    self._reassign_ports()
                    continue
                raise

    def _spawn_and_wait(self, timeout: float) -> None:
        self.config_file.write_text(self._render(), encoding="utf-8")
        with self.log_file.open("ab") as log:
            log.write(f"--- carewatch test harness: starting {self.name} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own session: a Ctrl-C in the terminal reaches pytest, which then stops
                # the servers in order, instead of killing them under running tests.
                start_new_session=True,
            )
        with _live_lock:
            _live.add(self)
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServiceError(
                    f"{self.name} exited with status {code} while starting on "
                    f"{self.host}:{self.port} (config {self.config_file}).\n"
                    f"--- log ---\n{self.log_text()}"
                )
            # The port must be held by *our* process: a leftover server on the same port
            # would otherwise answer for a child that is about to fail.
            if listening_pid_owns(self._proc.pid, self.host, self.port) and self._ready():
                return
            if time.monotonic() > deadline:
                self._terminate()
                raise ServiceError(
                    f"{self.name} did not answer on {self.host}:{self.port} within "
                    f"{timeout:.0f} s (config {self.config_file}).\n--- log ---\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server with SIGTERM (SIGKILL after ``timeout``) and wait for it.

        Data stays in place, so :meth:`start` brings the same state back.
        """
        self._terminate(timeout)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash, not a clean shutdown)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop, then start on the same port."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and delete its directory (unless CAREWATCH_KEEP_TMP is set)."""
        if self._closed:
            return
        self._terminate()
        self._closed = True
        with _live_lock:
            _live.discard(self)
        if not os.environ.get("CAREWATCH_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


# --- Mosquitto -----------------------------------------------------------------------


def mqtt_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an anonymous MQTT 3.1.1 CONNECT on ``host:port`` gets any CONNACK.

    A listening socket is not enough: Mosquitto accepts TCP before it is ready to serve.
    A refusal (a broker without anonymous access) still proves the broker answers.
    """
    return mqtt_connack(host, port, timeout) is not None


def mqtt_connack(host: str, port: int, timeout: float = 1.0) -> int | None:
    """The CONNACK return code for an anonymous MQTT 3.1.1 CONNECT (0 = accepted,
    5 = not authorized), or None when nothing that speaks MQTT answered."""
    client_id = f"carewatch-ping-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name, level 4, clean session, 10 s
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = bytes([0x10, len(body)]) + body  # body < 128 bytes: one-byte remaining length
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(packet)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return None
                answer += chunk
            if answer[:2] != b"\x20\x02":
                return None
            if answer[3] == 0:
                with contextlib.suppress(OSError):
                    sock.sendall(b"\xe0\x00")  # DISCONNECT: no "connection lost" noise
            return answer[3]
    except OSError:
        return None


class MosquittoService(ManagedProcess):
    """A Mosquitto broker for tests: ``.host``, ``.port``, ``.url``; stop/start keeps state.

    Anonymous clients are allowed unless ``anonymous=False``; ``extra_config`` is
    appended to the configuration (``password_file ...``, ``acl_file ...``). Persistence
    is on, so QoS 1 messages queued for a persistent session and retained messages
    survive :meth:`restart`. ``template`` replaces ``deploy/mosquitto/test.conf``; its
    placeholders are ``${user}``, ``${port}``, ``${data_dir}``, ``${log_file}``,
    ``${allow_anonymous}`` and ``${extra}``.
    """

    name = "mosquitto"
    package = "mosquitto"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        anonymous: bool = True,
        extra_config: str = "",
        template: Path = MOSQUITTO_TEMPLATE,
    ) -> None:
        self.binary = find_binary("mosquitto", self.package, ("/usr/sbin", "/usr/local/sbin"))
        super().__init__(host, port)
        self.anonymous = anonymous
        self.extra_config = extra_config
        self.template = template

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_file)]

    def _render(self) -> str:
        return render_template(
            self.template,
            {
                "user": getpass.getuser(),
                "port": str(self.port),
                "data_dir": str(self.data_dir),
                "log_file": str(self.log_file),
                "allow_anonymous": "true" if self.anonymous else "false",
                "extra": self.extra_config,
            },
        )

    def _ready(self) -> bool:
        return mqtt_ping(self.host, self.port, timeout=0.5)


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """Create a Mosquitto password file with ``users`` (name -> password) at ``path``.

    Uses ``mosquitto_passwd`` (Debian package ``mosquitto``) so the hashes are exactly
    what the broker expects. Pass ``password_file <path>`` in a broker's extra config.
    """
    tool = find_binary("mosquitto_passwd", "mosquitto", ("/usr/bin", "/usr/sbin"))
    path.unlink(missing_ok=True)
    for username, password in users.items():
        command = [tool, "-b", str(path), username, password]
        if not path.exists():
            command.insert(1, "-c")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"mosquitto_passwd failed for {username!r}: {done.stderr}")
    return path


# --- InfluxDB ------------------------------------------------------------------------


class InfluxDBService(ManagedProcess):
    """An InfluxDB 1.x server for tests: ``.url``, ``.host``, ``.port``, ``.query()``.

    With ``auth=True`` the HTTP API requires credentials and an admin user
    ``username`` / ``password`` is created right after the first start (InfluxDB allows
    exactly that one unauthenticated statement while no user exists).
    """

    name = "influxdb"
    package = "influxdb"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        auth: bool = False,
        username: str = "carewatch",
        password: str = "carewatch-test",
    ) -> None:
        self.binary = find_binary("influxd", self.package, ("/usr/bin", "/usr/local/bin"))
        super().__init__(host, port)
        self.rpc_port = free_port(host)
        self.auth = auth
        self.username = username
        self.password = password
        self._admin_created = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    def _reassign_ports(self) -> None:
        super()._reassign_ports()
        self.rpc_port = free_port(self.host)

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_file)]

    def _render(self) -> str:
        return render_template(
            INFLUXDB_TEMPLATE,
            {
                "http_port": str(self.port),
                "rpc_port": str(self.rpc_port),
                "data_dir": str(self.data_dir),
                "auth_enabled": "true" if self.auth else "false",
            },
        )

    def ping(self, timeout: float = 1.0) -> bool:
        """True when ``GET /ping`` answers 204."""
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=timeout) as response:
                return bool(response.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def _ready(self) -> bool:
        return self.ping(timeout=0.5)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (again, same ports) and wait for ``/ping``; create the admin user once."""
        super().start(timeout)
        if self.auth and not self._admin_created:
            self.query(
                f"CREATE USER {self.username} WITH PASSWORD '{self.password}' WITH ALL PRIVILEGES",
                authenticate=False,
            )
            self._admin_created = True

    def query(
        self,
        q: str,
        db: str | None = None,
        *,
        epoch: str | None = "ms",
        authenticate: bool = True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Run InfluxQL over ``POST /query`` and return the parsed JSON answer.

        Times come back as integers in ``epoch`` units (milliseconds by default; pass
        ``None`` for RFC 3339 strings). An HTTP error or a statement error in the answer
        raises :class:`ServiceError` with InfluxDB's message.
        """
        params: dict[str, str] = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.auth and authenticate:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(
            f"{self.url}/query",
            data=urllib.parse.urlencode(params).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise ServiceError(f"InfluxDB query {q!r} failed: HTTP {exc.code}: {body}") from None
        for result in answer.get("results", []):
            if "error" in result:
                raise ServiceError(f"InfluxDB query {q!r} failed: {result['error']}")
        if "error" in answer:
            raise ServiceError(f"InfluxDB query {q!r} failed: {answer['error']}")
        return answer

    def write(self, lines: list[str] | str, db: str, *, precision: str = "ms") -> None:
        """Write line protocol over ``POST /write`` (seeding data for tests).

        Raises :class:`ServiceError` with InfluxDB's message unless it answers 204.
        """
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.auth:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(
            f"{self.url}/write?{urllib.parse.urlencode(params)}",
            data=body.encode("utf-8"),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10.0) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            raise ServiceError(f"InfluxDB write failed: HTTP {exc.code}: {text}") from None
        if status != 204:
            raise ServiceError(f"InfluxDB write answered HTTP {status}, expected 204")

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE "name"`` (idempotent in InfluxDB)."""
        self.query(f'CREATE DATABASE "{_ident(name)}"')

    def databases(self) -> list[str]:
        """Names from ``SHOW DATABASES``."""
        answer = self.query("SHOW DATABASES")
        series = answer["results"][0].get("series", [])
        return [row[0] for s in series for row in s.get("values", [])]

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts (column -> value), all series merged.

        ``GROUP BY`` tags are merged into each row as extra keys.
        """
        answer = self.query(q, db)
        out: list[dict[str, Any]] = []
        for result in answer.get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out


def _ident(name: str) -> str:
    """Escape a name for use inside double quotes in InfluxQL."""
    return name.replace("\\", "\\\\").replace('"', '\\"')
