"""The capacity planner against the design's own figures, and its input errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from capturelab.errors import InputError
from capturelab.plan import Cohort, plan


def _cohort(**kw: object) -> Cohort:
    base: dict[str, object] = {
        "participants": 10_000,
        "kb_per_minute": 200,
        "active_hours": 24,
        "compression_saving": 0.7,
        "retention_days": 30,
    }
    return Cohort(**(base | kw))  # type: ignore[arg-type]


def test_design_volume_24h_and_10h():
    assert plan(_cohort()).raw_bytes_per_day == pytest.approx(2.88e12)
    ten = plan(_cohort(active_hours=10))
    assert ten.raw_bytes_per_day == pytest.approx(1.2e12)
    assert ten.compressed_bytes_per_day == pytest.approx(0.36e12)


def test_rates_link_and_buffers():
    p = plan(_cohort(array_tb=16, peak_factor=3, replication=2, kafka_retention_days=5))
    # 10,000 x 200 KB/min = 33.3 MB/s raw, 10 MB/s compressed
    assert p.avg_ingest_bytes_per_s == pytest.approx(10e6)
    assert p.peak_ingest_bytes_per_s == pytest.approx(30e6)
    assert p.link_share_10gbe == pytest.approx(30e6 / 1.25e9)
    assert p.kafka_buffer_bytes == pytest.approx(0.864e12 * 5 * 2)
    assert p.array_days_until_full == pytest.approx(16e12 / 0.864e12)
    assert p.retention_fits_array is False


def test_design_power_counts_one_pi():
    one = plan(_cohort(participants=1))
    assert one.total_watts == pytest.approx(825)
    assert one.energy_kwh_per_day == pytest.approx(19.8)
    assert plan(_cohort(participants=4)).power_watts["collectors"] == pytest.approx(20)
    assert plan(_cohort(participants=100, collectors=4)).total_watts == pytest.approx(840)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("participants", 0, "participants must be at least 1"),
        ("active_hours", 25, "active-hours must be in (0, 24]"),
        ("compression_saving", 1.0, "compression-saving must be in [0, 1)"),
        ("kb_per_minute", float("nan"), "kb-per-minute must be positive"),
        ("watts", {"fridge": 100.0}, "watts: unknown tier(s) fridge"),
    ],
)
def test_bad_input_names_the_option(field: str, value: object, needle: str):
    with pytest.raises(InputError) as err:
        plan(_cohort(**{field: value}))
    assert needle in str(err.value)


COHORT_ARGS = [
    "--kb-per-minute",
    "200",
    "--active-hours",
    "10",
    "--compression-saving",
    "0.7",
    "--retention-days",
    "30",
]


def _cli(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["capturelab", "plan", *COHORT_ARGS, *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_json_keys(tool_env: dict[str, str]):
    res = _cli(tool_env, "--participants", "10000", "--array-tb", "16", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["raw_bytes_per_day"] == 1_200_000_000_000
    assert data["compressed_bytes_per_day"] == 360_000_000_000
    assert data["avg_ingest_bytes_per_s"] == pytest.approx(10e6)
    assert data["assumptions"]


def test_cli_bad_watts_exit_2(tool_env: dict[str, str]):
    res = _cli(tool_env, "--participants", "1", "--watts", "gateway=lots")
    assert res.returncode == 2
    assert "--watts: 'gateway=lots': 'lots' is not a number" in res.stderr
