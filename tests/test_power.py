"""Power readings: each source parsed from its real output shape, the order of preference, labels."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from capturelab.errors import InputError
from capturelab.power import (
    PMIC_OFFSET_W,
    PMIC_SCALE,
    best_reading,
    parse_pmic,
    parse_rapl_pair,
    parse_tasmota,
    read_plug,
)

# The shape of `vcgencmd pmic_read_adc` on a Pi 5 (values from an idle board).
PMIC = """\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05173344A
       1V8_SYS_A current(2)=0.16693500A
      DDR_VDD2_A current(3)=0.02049453A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18642480A
       0V8_SYS_A current(6)=0.33091920A
      VDD_CORE_A current(7)=0.71910000A
     3V7_WL_SW_V volt(8)=3.74505400V
       3V3_SYS_V volt(9)=3.31136300V
       1V8_SYS_V volt(10)=1.79963500V
      DDR_VDD2_V volt(11)=1.11000000V
      DDR_VDDQ_V volt(12)=0.60231700V
       1V1_SYS_V volt(13)=1.10487500V
       0V8_SYS_V volt(14)=0.80073280V
      VDD_CORE_V volt(15)=0.72010000V
         EXT5V_V volt(24)=5.12658000V
          BATT_V volt(25)=0.00000000V
"""


def fake_run(outputs: dict[str, tuple[int, str]]):  # type: ignore[no-untyped-def]
    def run(command: str) -> tuple[int, str]:
        for prefix, answer in outputs.items():
            if command.startswith(prefix):
                return answer
        return 127, ""

    return run


def test_pmic_sums_rails_with_both_readings_and_applies_the_calibration():
    rail_sum, rails = parse_pmic(PMIC)
    assert rails == 8  # EXT5V and BATT have no current reading
    expected = (
        0.00390372 * 3.745054 + 0.05173344 * 3.311363 + 0.166935 * 1.799635 + 0.02049453 * 1.11
    )
    expected += 0.1864248 * 1.104875 + 0.3309192 * 0.8007328 + 0.7191 * 0.7201
    assert rail_sum == pytest.approx(expected)
    reading = best_reading("pi5-01", ["collectors"], fake_run({"vcgencmd": (0, PMIC)}))
    assert reading.source == "measured" and reading.tool == "vcgencmd pmic_read_adc"
    assert reading.watts == pytest.approx(expected * PMIC_SCALE + PMIC_OFFSET_W, abs=0.01)
    with pytest.raises(InputError, match="no rail"):
        parse_pmic("EXT5V_V volt(24)=5.1V\n")


def test_rapl_handles_the_counter_wrapping():
    # two packages; the second wrapped between the samples (max range 1,000,000 uJ)
    watts = parse_rapl_pair("100 999000\n2100000 1000\n", [10**9, 1_000_000], 2.0)
    assert watts == pytest.approx((2.0999 + 0.002) / 2.0)
    with pytest.raises(InputError, match="two samples"):
        parse_rapl_pair("1 2 3", [10], 1.0)


def test_order_gpu_plus_cpu_then_cpu_then_nameplate():
    gpu_node = fake_run({
        "nvidia-smi": (0, "312.5\n101.25\n"),
        "cat /sys/class/powercap/intel-rapl:[0-9]*/max_energy_range_uj": (0, "262143328850\n"),
        "cat /sys/class/powercap/intel-rapl:[0-9]*/energy_uj": (0, "1000000\n66000000\n"),
    })  # fmt: skip
    r = best_reading("gpu-01", ["processing"], gpu_node)
    assert r.watts == pytest.approx(312.5 + 101.25 + 65.0) and r.tool == "nvidia-smi + RAPL"
    assert "not included" in r.detail and r.source == "measured"
    cpu_only = fake_run({
        "cat /sys/class/powercap/intel-rapl:[0-9]*/max_energy_range_uj": (0, "262143328850\n"),
        "cat /sys/class/powercap/intel-rapl:[0-9]*/energy_uj": (0, "0\n48000000\n"),
    })  # fmt: skip
    assert best_reading("gw", ["gateways"], cpu_only).watts == pytest.approx(48.0)
    nothing = fake_run({})
    modelled = best_reading("storage-01", ["storage"], nothing)
    assert (modelled.watts, modelled.source, modelled.tool) == (250.0, "modelled", "design figure")
    declared = best_reading("storage-01", ["storage"], nothing, declared_w=180)
    assert (declared.watts, declared.tool) == (180.0, "nameplate")
    with pytest.raises(InputError, match="power_nameplate_w"):
        best_reading("mystery", [], nothing)


@pytest.fixture
def plug_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/rpc/Switch.GetStatus?id=0"):
                body = {
                    "id": 0,
                    "source": "init",
                    "output": True,
                    "apower": 118.4,
                    "voltage": 229.8,
                }
            elif self.path.startswith("/cm?cmnd=Status+8") or self.path.startswith(
                "/cm?cmnd=Status%208"
            ):
                body = {
                    "StatusSNS": {
                        "Time": "2026-11-22T10:00:00",
                        "ENERGY": {"Power": [240, 12], "Voltage": 230},
                    }
                }
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_smart_plugs_over_http(plug_server: str):
    shelly = read_plug("gateway-01", {"type": "shelly", "url": plug_server, "id": 0})
    assert (shelly.watts, shelly.source) == (118.4, "measured") and "Shelly" in shelly.tool
    tasmota = read_plug("storage-01", {"type": "tasmota", "url": plug_server})
    assert tasmota.watts == 252.0 and "Tasmota" in tasmota.tool
    # a plug wins over everything the node itself could report
    r = best_reading("pi5-01", ["collectors"], fake_run({"vcgencmd": (0, PMIC)}),
                     plug={"type": "shelly", "url": plug_server})  # fmt: skip
    assert r.watts == 118.4
    with pytest.raises(InputError, match="power_plug needs type"):
        read_plug("x", {"type": "kasa", "url": plug_server})
    with pytest.raises(InputError, match=r"ENERGY\.Power"):
        parse_tasmota({"StatusSNS": {}})


def test_training_energy_meter_reads_package_zones_across_a_wrap(tmp_path):
    from capturelab.train.energy import EnergyMeter  # noqa: PLC0415 - only this test needs it

    package = tmp_path / "intel-rapl:0"
    package.mkdir()
    (package / "energy_uj").write_text("999000\n")
    (package / "max_energy_range_uj").write_text("1000000\n")
    core = tmp_path / "intel-rapl:0:0"  # a sub-zone: already inside the package figure
    core.mkdir()
    (core / "energy_uj").write_text("5\n")
    (core / "max_energy_range_uj").write_text("10\n")
    meter = EnergyMeter(powercap=tmp_path, nvidia_smi="")
    meter.start()
    (package / "energy_uj").write_text("2000\n")
    result = meter.stop()
    assert (
        result["joules"] == pytest.approx(0.003)
        and result["source"] == "measured: cpu_package_rapl"
    )
    nothing = EnergyMeter(powercap=tmp_path / "absent", nvidia_smi="")
    nothing.start()
    assert nothing.stop()["source"] == "unavailable"


def test_inventory_power_variables_are_checked_naming_the_host():
    from capturelab.power import inventory_power  # noqa: PLC0415

    assert inventory_power("gw", {"type": "shelly", "url": "http://p"}, 95) == (
        {"type": "shelly", "url": "http://p"},
        95.0,
    )
    with pytest.raises(InputError, match="gw: power_nameplate_w must be watts"):
        inventory_power("gw", None, "ninety")
    with pytest.raises(InputError, match="gw: power_plug must be a mapping"):
        inventory_power("gw", "http://p", None)
