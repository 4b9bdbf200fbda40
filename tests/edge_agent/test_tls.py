"""The uplink over TLS with a password and the production ACL, on a real Mosquitto."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from carewatch.services import free_port
from tests.edge_agent.helpers import Collector, running_agent
from tests.harness import MosquittoService, write_password_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto" / "acl.conf"


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=carewatch-test-ca",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_uplink_over_tls_with_password_under_the_acl(tmp_path: Path):
    ca, cert, key = make_certs(tmp_path)
    passwd = write_password_file(
        tmp_path / "passwd", {"gw-1": "gw-secret", "carewatch-stream": "stream-secret"}
    )
    tls_port = free_port()
    broker = MosquittoService(
        anonymous=False,
        extra_config=(
            f"password_file {passwd}\nacl_file {ACL}\n"
            f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        ),
    )
    broker.start()
    try:
        (tmp_path / "gw.pw").write_text("gw-secret\n")
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            f"""
site: sunrise
gateway: gw-1
broker:
  url: mqtts://127.0.0.1:{tls_port}
  username: gw-1
  password_file: gw.pw
  tls: {{ca_file: ca.pem}}
queue: {{path: queue.db}}
health: {{heartbeat_interval: 1s}}
clock: {{trust: always}}
"""
        )
        async with (
            Collector(broker, "carewatch/v1", "carewatch-stream", "stream-secret") as col,
            running_agent(cfg) as agent,
        ):
            assert agent.queue is not None and agent.clock is not None
            from edge_agent.queue import Draft

            now = agent.clock.now_ms()
            await agent.queue.put(
                [
                    Draft(
                        device="d1",
                        kind="pendant",
                        reading="press",
                        time=now,
                        received=now,
                        urgent=True,
                        values={"button": "sos"},
                    )
                ]
            )
            await col.wait_for(lambda c: any(e.reading == "press" for e in c.events), what="press")
            await col.wait_for(lambda c: "online" in c.status and bool(c.health), what="status")
            assert agent.uplink is not None and agent.uplink.stats.connects == 1
    finally:
        broker.close()
    assert col.events[0].gateway == "gw-1" and col.events[0].site == "sunrise"
