"""Running Kafka's own admin tools from the role's modules, with bounded retries."""

from __future__ import annotations

import subprocess
import time

TRANSIENT = (
    "TimeoutException",
    "Connection to node",
    "could not be established",
    "DisconnectException",
    "NotControllerException",
    "LEADER_NOT_AVAILABLE",
    # SCRAM credentials reach every broker a moment after they are created.
    "Authentication failed during authentication due to invalid credentials",
)


def run_java(
    module, classpath, main, args, *, retries, delay, command_config=None, secret_in_args=False
):
    """Run ``java -cp classpath main args``; retry transient failures, then fail the module."""
    argv = ["java", "-cp", classpath, main, *args]
    if command_config:
        argv += ["--command-config", command_config]
    last = ""
    for attempt in range(max(1, retries)):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=180)
        if proc.returncode == 0:
            return proc.stdout
        last = (proc.stderr or proc.stdout).strip()
        if not any(marker in last for marker in TRANSIENT):
            break
        if attempt + 1 < retries:
            time.sleep(delay)
    shown = "(arguments hidden: they carry a secret)" if secret_in_args else " ".join(args)
    module.fail_json(msg=f"{main.rsplit('.', 1)[-1]} {shown} failed: {last[-1500:]}")
    return ""
