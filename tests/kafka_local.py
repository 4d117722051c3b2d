"""A real single-node Apache Kafka (KRaft) on loopback, for the sink's fault tests.

It runs the same jars the ``kafka`` role installs (resolved and checksum-verified on the
controller by ``make kafka-jars``), as ``java -cp 'libs/*' kafka.Kafka``. Loopback only; every
wait is bounded.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")


def kafka_libs() -> Path:
    override = os.environ.get("CAPTURELAB_KAFKA_LIBS")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "capturelab" / "kafka" / f"{KAFKA_VERSION}-maven" / "libs"


def require_libs() -> Path:
    libs = kafka_libs()
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        message = f"Kafka jars not at {libs}: run `make kafka-jars` first"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must run these: `make test` fetches the jars first
        pytest.skip(message)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pki(folder: Path) -> tuple[Path, Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 (PEM: key + chain in one file)."""
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "broker.key",
        "-out", "broker.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "broker.crt")  # fmt: skip
    ssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
    keystore = folder / "broker.pem"
    keystore.write_text(
        (folder / "broker.pk8").read_text() + (folder / "broker.crt").read_text()
        + (folder / "ca.crt").read_text()
    )  # fmt: skip
    return folder / "ca.crt", keystore


class LocalKafka:
    """``scram_users`` adds a TLS + SASL/SCRAM-SHA-512 listener (``secure_bootstrap``) with
    those users, as the gateway's 9094; the PLAINTEXT one stays for admin and other tests."""

    def __init__(
        self, workdir: Path, libs: Path, scram_users: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.libs = libs
        self.port = free_port()
        self.controller_port = free_port()
        self.data = workdir / "data"
        self.config = workdir / "server.properties"
        self.log = workdir / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.secure_bootstrap = ""
        self.ca_file = Path()
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        extra: list[str] = []
        format_args: list[str] = []
        if scram_users:
            secure_port = free_port()
            self.secure_bootstrap = f"127.0.0.1:{secure_port}"
            self.ca_file, keystore = make_pki(workdir / "pki")
            listeners.append(f"SASL_SSL://127.0.0.1:{secure_port}")
            protocols.append("SASL_SSL:SASL_SSL")
            extra = [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
            ]
            for user, password in scram_users.items():
                format_args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        self.config.write_text(
            "\n".join(
                [
                    "node.id=1",
                    "process.roles=broker,controller",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    "controller.listener.names=CONTROLLER",
                    f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={','.join(listeners)}",
                    f"listener.security.protocol.map={','.join(protocols)}",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    *extra,
                    "",
                ]
            )
        )
        cluster_id = "-"
        while cluster_id.startswith("-"):  # "-..." would read as an option to StorageTool
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.config),
                *format_args,
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [java, "-Xmx512m", "-XX:+UseSerialGC", "-cp", f"{self.libs}/*", main, *args]

    def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config)), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"kafka exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.3)
                continue
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10)
            if md.brokers:
                return
        raise RuntimeError(f"kafka did not come up in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def create_topic(self, name: str, partitions: int = 1, **config: str) -> str:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
        )
        futures[name].result(30)
        return name
