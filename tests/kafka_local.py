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


class LocalKafka:
    def __init__(self, workdir: Path, libs: Path) -> None:
        self.workdir = workdir
        self.libs = libs
        self.port = free_port()
        self.controller_port = free_port()
        self.data = workdir / "data"
        self.config = workdir / "server.properties"
        self.log = workdir / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.config.write_text(
            "\n".join(
                [
                    "node.id=1",
                    "process.roles=broker,controller",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    "controller.listener.names=CONTROLLER",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
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
