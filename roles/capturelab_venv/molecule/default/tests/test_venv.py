"""capturelab runs on arm64 from the wheelhouse: binary wheels, no index, no compiler needed."""

from __future__ import annotations

VENV = "/opt/capturelab/venv"


def test_capturelab_runs(host):
    assert host.check_output(f"{VENV}/bin/capturelab --version").startswith("capturelab ")


def test_native_wheels_are_aarch64_and_import(host):
    listing = host.check_output("ls /opt/capturelab/wheelhouse/*/")
    assert "aarch64" in listing and "x86_64" not in listing
    out = host.check_output(
        f"{VENV}/bin/python -c 'import confluent_kafka, zstandard, crc32c, platform; "
        "print(platform.machine(), confluent_kafka.libversion()[0])'"
    )
    assert out.startswith("aarch64 ")


def test_no_compiler_was_needed(host):
    assert not host.exists("gcc") and not host.exists("cc")


def test_only_the_current_wheelhouse_is_kept(host):
    assert len(host.check_output("ls /opt/capturelab/wheelhouse").split()) == 1


def test_the_copy_is_checked_and_marked_complete(host):
    (folder,) = host.check_output("ls -d /opt/capturelab/wheelhouse/*/").split()
    sums = host.file(f"{folder}NODE.SHA256SUMS").content_string
    assert host.file(f"{folder}.complete").content_string == sums
    assert host.run(f"cd {folder} && sha256sum --check --quiet --strict NODE.SHA256SUMS").rc == 0
    # Every wheel that arrived is listed (the archive carried nothing unchecked), and the
    # archive itself was unpacked, not kept.
    listed = {line.split("  ", 1)[1] for line in sums.splitlines()}
    present = set(host.check_output(f"ls {folder}").split()) - {"NODE.SHA256SUMS"}
    assert present == listed and "wheels.tar" not in present
