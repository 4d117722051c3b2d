"""Verify the common role on a converged node (testinfra; shared by the amd64 and arm64 scenarios)."""

from __future__ import annotations

import socket
import time

import pytest


@pytest.fixture(scope="module")
def hostvars(host):
    return host.ansible.get_variables()


def test_hostname(host, hostvars):
    assert host.check_output("hostname") == hostvars["inventory_hostname"]


@pytest.mark.parametrize("pkg", ["nftables", "curl", "jq", "sudo", "ca-certificates"])
def test_base_packages(host, pkg):
    assert host.package(pkg).is_installed


def test_service_user(host):
    user = host.user("capturelab")
    assert user.exists
    assert user.uid < 1000, "a system account"
    assert user.shell == "/usr/sbin/nologin"
    home = host.file("/var/lib/capturelab")
    assert home.is_directory
    assert home.user == "capturelab"
    assert home.mode == 0o750


def test_journald_persistent_and_capped(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-capturelab.conf")
    assert conf.contains("^Storage=persistent$")
    assert conf.contains("^SystemMaxUse=512M$")
    assert host.file("/var/log/journal").is_directory
    assert host.service("systemd-journald").is_running
    # journald writes to the persistent directory once it is there.
    usage = host.check_output("journalctl --disk-usage")
    assert "Archived and active journals take up" in usage
    assert host.run("find /var/log/journal -name '*.journal' | grep -q .").rc == 0


def test_sysctl_by_tier(host, hostvars):
    conf = host.file("/etc/sysctl.d/60-capturelab.conf")
    assert conf.contains("^vm.swappiness = 10$")
    if "gateways" in hostvars["group_names"]:
        assert conf.contains("^net.core.rmem_max = 67108864$")
    else:
        assert not conf.contains("net.core.rmem_max")


def test_no_time_sync_daemon_in_a_container(host):
    assert not host.package("chrony").is_installed


def _nft_unavailable(host) -> str:
    """Why nft cannot reach the kernel here ('' when it can): qemu-user has no netlink."""
    probe = host.run("nft list tables")
    return "" if probe.rc == 0 else probe.stderr.strip()


def _assert_tier_ports(rules: str, groups: list[str]) -> None:
    """SSH for everyone; Kafka's port only where the host is in the gateways group."""
    assert "policy drop" in rules
    assert "tcp dport 22 accept" in rules
    if "gateways" in groups:
        assert "tcp dport 9092 accept" in rules
    else:
        assert "dport 9092" not in rules


def test_firewall_rules_file(host, hostvars):
    assert host.service("nftables").is_enabled
    rules = host.file("/etc/nftables.conf").content_string
    assert "172.16.0.0/12" in rules
    _assert_tier_ports(rules, hostvars["group_names"])


def test_firewall_table(host, hostvars):
    why = _nft_unavailable(host)
    if why:
        pytest.skip(f"nft cannot reach the kernel in this emulated container: {why}")
    _assert_tier_ports(host.check_output("nft list table inet capturelab"), hostvars["group_names"])


def _reachable(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=3):
            return True
    except OSError:
        return False


def _listen(host, port: int) -> None:
    host.run(
        "nohup python3 -c 'import socket,time;s=socket.socket();"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f's.bind(("0.0.0.0",{port}));s.listen();time.sleep(60)\' >/dev/null 2>&1 &'
    )


def test_firewall_enforced(host, hostvars):
    """From the controller (inside the allowed 172.16/12), an open port answers, a closed one does not."""
    why = _nft_unavailable(host)
    if why:
        pytest.skip(f"nft cannot reach the kernel in this emulated container: {why}")
    ip = host.check_output("hostname -I").split()[0]
    open_port = 9092 if "gateways" in hostvars["group_names"] else 22
    closed_port = 9099
    _listen(host, closed_port)
    if open_port != 22:
        _listen(host, open_port)
    time.sleep(1)
    try:
        assert (
            host.run(
                f"python3 -c 'import socket;socket.create_connection((\"127.0.0.1\",{closed_port}),2)'"
            ).rc
            == 0
        ), "the listener itself is up (loopback is always allowed)"
        assert not _reachable(ip, closed_port), f"port {closed_port} must be dropped"
        if open_port != 22:
            assert _reachable(ip, open_port), (
                f"port {open_port} must be open for {hostvars['group_names']}"
            )
    finally:
        host.run("pkill -f 'socket.socket()' || true")


def test_pi5_boot_settings(host, hostvars):
    if (
        hostvars.get("common_pi5_model_file", "/proc/device-tree/model")
        == "/proc/device-tree/model"
    ):
        assert not host.file("/boot/firmware/config.txt").exists, "not a Pi: no boot files written"
        return
    config = host.file("/boot/firmware/config.txt")
    assert config.contains("^# BEGIN capturelab common role$")
    assert config.contains("^usb_max_current_enable=1$")
    assert config.contains("^dtparam=audio=on$"), "existing settings are kept"
    cmdline = host.file("/boot/firmware/cmdline.txt").content_string
    assert cmdline.count("\n") == 1, "cmdline.txt stays one line"
    words = cmdline.split()
    assert words[:2] == ["console=serial0,115200", "console=tty1"], (
        "existing arguments are kept, in order"
    )
    assert "consoleblank=0" in words
    assert "usbhid.mousepoll=0" in words
    assert len(words) == len(set(words)), "no argument is added twice"
