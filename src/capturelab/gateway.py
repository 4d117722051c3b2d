"""The gateway's client settings on the Python side: topic names and ports.

The roles keep the same values in ``roles/capturelab_gateway/defaults/main.yml`` (the kafka role
listens and creates topics by them, the collector's and the sink's configs are rendered from
them); ``tests/test_gateway_settings.py`` proves the two equal. The daemons' config defaults and
the benchmarks read these names, never a literal.
"""

from __future__ import annotations

GATEWAY_GROUP = "gateways"
PLAINTEXT_PORT = 9092  # the sim lab's client listener (loopback and bridge only)
SASL_PORT = 9094  # TLS + SASL/SCRAM, every real deployment
CONTROLLER_PORT = 9093  # KRaft, broker to broker (the firewall opens it on the gateways)
CAPTURE_TOPIC = "capture.events"
CONTROL_TOPIC = "capture.control"
