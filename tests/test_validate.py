"""Validation without a lab: targets from the inventory, checks, the load, the report's files."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from collectorkit import wait_for
from consentkit import AUTHORITY
from kafka_local import LocalKafka
from test_sink_kafka import running, sink_config, topics

from capturelab.cli import main
from capturelab.errors import HostEnvironmentError, InputError
from capturelab.power import Reading
from capturelab.report.render import summary_lines, write_report
from capturelab.results import Result, exit_code, read_results
from capturelab.sink.audit import CollectorAudit, audit
from capturelab.validate.checks import parse_iperf3, power_results, stage_timeline
from capturelab.validate.connect import Connection, parse_rendered, rendered_connections
from capturelab.validate.load import Admission, load_identity, offer, request_erasure
from capturelab.validate.targets import targets_from_vars

REPO = Path(__file__).resolve().parent.parent
TIERS = {"collectors": ["c1", "c2"], "gateways": ["gw"], "storage": ["st"], "processing": ["gpu"]}


def sim_vars() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (REPO / "inventory/sim/group_vars/all/validation.yml").read_text()
    )
    return data


def test_targets_follow_the_inventory_through_the_planner():
    t = targets_from_vars(sim_vars(), TIERS)
    cohort = sim_vars()["validation_cohort"]
    expected = (
        cohort["participants"]
        * cohort["kb_per_minute"]
        * 1000
        / 60
        * (1 - cohort["compression_saving"])
        * sim_vars()["validation_headroom"]
    )
    assert t.ingest_bytes_per_s == pytest.approx(expected)
    assert t.collector_bytes_per_s == pytest.approx(expected / cohort["participants"])
    assert t.plan.avg_ingest_bytes_per_s * t.headroom == pytest.approx(expected)
    # the design's budget: two Pis + gateway + storage + GPU node
    assert t.total_budget_w == 2 * 5 + 120 + 250 + 450
    assert t.to_dict()["energy_budget_kwh_per_day"] == pytest.approx(830 * 24 / 1000)
    example = yaml.safe_load(
        (REPO / "inventory/homelab.example/group_vars/all/validation.yml").read_text()
    )
    one_pi = {**TIERS, "collectors": ["c1"]}
    real = targets_from_vars(example, one_pi)
    assert real.total_budget_w == 825  # the design's 825 W with one collector
    assert real.to_dict()["energy_budget_kwh_per_day"] == pytest.approx(19.8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"validation_cohort": None}, "validation_cohort is not set"),
        ({"validation_cohort": {"participants": 2}}, "validation_cohort: missing field(s)"),
        (
            {"validation_cohort": {**sim_vars()["validation_cohort"], "people": 3}},
            "validation_cohort: unknown field(s) people",
        ),
        (
            {"validation_cohort": {**sim_vars()["validation_cohort"], "participants": "many"}},
            "validation_cohort.participants must be a number",
        ),
        (
            {"validation_cohort": {**sim_vars()["validation_cohort"], "compression_saving": 1.5}},
            "compression-saving must be in [0, 1)",
        ),
        ({"validation_headroom": 0.5}, "validation_headroom must be from 1"),
        (
            {"validation_sustained_seconds": 100000},
            "validation_sustained_seconds must be from 10 to 600",
        ),
        (
            {"validation_power_budget_w": {"collectors": 5}},
            "validation_power_budget_w.gateways is missing",
        ),
        (
            {"validation_power_budget_w": {**sim_vars()["validation_power_budget_w"], "nas": 9}},
            "validation_power_budget_w: unknown tier group(s) nas",
        ),
    ],
)
def test_bad_validation_variables_are_named(change: dict[str, Any], message: str):
    with pytest.raises(InputError) as err:
        targets_from_vars({**sim_vars(), **change}, TIERS)
    assert message in str(err.value)


def test_power_per_node_tier_and_total_with_sources():
    t = targets_from_vars(sim_vars(), TIERS)
    readings = [
        (Reading("c1", 4.2, "measured", "vcgencmd pmic_read_adc"), ["collectors"]),
        (Reading("c2", 6.5, "measured", "vcgencmd pmic_read_adc"), ["collectors"]),
        (Reading("gw", 120.0, "modelled", "design figure"), ["gateways"]),
        (
            Reading("st", 180.0, "measured", "Shelly Gen2 RPC Switch.GetStatus (apower)"),
            ["storage"],
        ),
        (Reading("gpu", 300.0, "measured", "nvidia-smi + RAPL"), ["processing"]),
    ]
    by = {(r.check, r.node): r for r in power_results(readings, t)}
    assert by[("node-power", "c2")].status == "fail"  # 6.5 W over the Pi's 5 W
    assert by[("node-power", "gw")].source == "modelled"
    tier = by[("tier-power-collectors", "collectors")]
    assert (tier.value, tier.target, tier.status) == (10.7, 10, "fail")
    assert tier.source == "measured"
    total = by[("total-power", "lab")]
    assert total.value == pytest.approx(610.7) and total.status == "pass"
    assert total.source == "modelled" and "partly modelled" in total.detail
    assert by[("energy-per-day", "lab")].value == pytest.approx(610.7 * 24 / 1000, abs=1e-3)


def test_iperf3_json_and_its_errors():
    doc = {"end": {"sum_received": {"bits_per_second": 8e9}, "sum_sent": {"retransmits": 3}}}
    assert parse_iperf3(json.dumps(doc)) == (1e9, 3)
    with pytest.raises(InputError, match="iperf3: unable to connect"):
        parse_iperf3(json.dumps({"error": "unable to connect to server: Connection refused"}))
    with pytest.raises(InputError, match="not JSON"):
        parse_iperf3("iperf3: error")


def test_sequence_window_counts_missing_and_duplicates():
    c = CollectorAudit(intervals=[(0, 9), (10, 19), (15, 24), (30, 39)])
    w = c.window(5, 34)
    assert (w["expected"], w["stored"], w["duplicates"]) == (30, 25, 5)
    assert w["missing"] == [[25, 29]]
    assert c.window(40, 49)["missing"] == [[40, 49]]
    assert stage_timeline([("a", 10.0, 12.5), ("b", 12.5, 20.0)]) == [
        {"stage": "a", "start_s": 0.0, "seconds": 2.5},
        {"stage": "b", "start_s": 2.5, "seconds": 7.5},
    ]


def test_load_lands_exactly_once_and_its_erasure_leaves_nothing(kafka: LocalKafka, tmp_path: Path):
    events, control = topics(kafka, "load")
    root = tmp_path / "array"
    admission = Admission(AUTHORITY, control, region="us")  # a signed key and grant first
    result = offer(
        kafka.bootstrap, events, "unit1", 300_000, 3, frame_bytes=8192, admission=admission
    )
    # the whole window's volume was offered (one frame more at most), and never faster than
    # the rate: the pacing is what the sustained check relies on (its speed is the lab's)
    assert 900_000 < result.bytes <= 900_000 + 8192 * 1.2
    assert result.achieved_bytes_per_s <= result.bytes / 3
    assert result.window_seconds == 3 and result.frames >= 100
    collector, pseudonym = load_identity("unit1")
    secure = {"require_collector_auth": True, "require_grant": True}
    with running(sink_config(tmp_path, kafka, "load", **secure)) as sink:
        wait_for(lambda: audit(root).events == result.events, "every load event stored")
        window = audit(root).collectors[collector].window(0, result.events - 1)
        assert window["stored"] == window["expected"] and not window["duplicates"]
        verify = ["sink", "verify", "--root", str(root), "--collector", collector]
        assert main([*verify, "--seq-from", "0", "--seq-to", str(result.events - 1)]) == 0
        assert main([*verify, "--seq-from", "0", "--seq-to", str(result.events)]) == 1  # one short
        with pytest.raises(SystemExit):
            main([*verify, "--seq-from", "x"])
        assert sink.store.counters.unauthenticated == sink.store.counters.ungranted == 0
        request_erasure(kafka.bootstrap, control, "unit1", "unit test", AUTHORITY)
        wait_for(lambda: audit(root).events == 0, "the load erased")
        assert not (root / "consent" / f"{pseudonym.hex()}.json").exists()  # the grant, too
    assert not (root / "segments" / pseudonym.hex()).exists()
    assert (
        json.loads((root / "tombstones" / f"{pseudonym.hex()}.json").read_text())["state"]
        == "erased"
    )


def test_report_folder_html_junit_and_summary(tmp_path: Path):
    results = [
        Result(
            "throughput",
            "iperf3-gateway-to-storage",
            "st",
            "pass",
            2.5e8,
            4e5,
            "B/s",
            tool="iperf3",
            detail="2000 Mbit/s",
        ),
        Result("throughput", "sustained-ingest", "lab", "fail", 3e5, 4e5, "B/s", tool="load"),
        Result("power", "node-power", "gw", "pass", 120.0, 120.0, "W", "modelled", "design figure"),
        Result(
            "e2e", "finetune-metrics", "lab", "skip", tool="pytest", detail="no processing node"
        ),
    ]
    evidence = {
        "timeline": [{"stage": "capture", "start_s": 0, "seconds": 31.2}],
        "loss_curve": [2.0, 1.9, 1.7],
        "redaction_findings": {"email": 2, "card": 1},
        "targets": {"ingest_bytes_per_s": 4e5},
    }
    folder = write_report(tmp_path, results, [], stamp="20261123T010000", evidence=evidence)
    html = (folder / "report.html").read_text()
    assert (
        html.count('src="data:image/png;base64,') == 5
    )  # throughput, power, timeline, loss, findings
    assert "http" not in html.replace("https://", "").split("<body>")[0]  # loads nothing
    assert "modelled" in html and "design figure" in html
    suites = ET.parse(folder / "junit.xml").getroot()  # noqa: S314 - our own file
    by = {s.get("name"): s for s in suites}
    assert by["throughput"].get("failures") == "1" and by["e2e"].get("skipped") == "1"
    assert json.loads((folder / "results.json").read_text())[1]["status"] == "fail"
    assert "FAIL" in (folder / "report.md").read_text()
    lines = summary_lines(results, folder)
    assert lines[0].endswith("(FAIL, exit 1)") and any("sustained-ingest" in x for x in lines)
    assert exit_code(results) == 1
    bare = write_report(tmp_path, results[:1], [], stamp="20261123T020000")
    assert (
        "Not drawn (no data recorded): power, stage timeline" in (bare / "report.html").read_text()
    )


def test_connections_render_like_ansible_and_map_to_native_backends(
    monkeypatch: pytest.MonkeyPatch,
):
    inventory = REPO / "inventory/sim"
    # A callback the user enabled prints on stdout too; the JSON must still parse.
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "ansible.posix.profile_tasks")
    conns = rendered_connections(inventory)  # the debug module runs on the controller only
    spec, kwargs = conns["collector-01"].spec(inventory)
    assert spec == "docker://root@capturelab-collector-01" and kwargs == {}
    spec, kwargs = conns["storage-01"].spec(inventory)
    assert spec == "ssh://root@127.0.0.1:2222"
    assert kwargs["ssh_identity_file"] == str(REPO / ".lab/ssh/id_ed25519")
    assert "StrictHostKeyChecking=no" in kwargs["ssh_extra_args"]
    # become, or a connection testinfra has no backend for, goes through Ansible itself
    other = Connection("pi", "ssh", "10.0.0.5", become=True).spec(inventory)
    assert other[0].startswith("ansible://pi?") and "force_ansible=true" in other[0]
    ok = {"plays": [{"tasks": [{"hosts": {"pi": {"msg": {"connection": "ssh", "host": "h"}}}}]}]}
    noisy = "Tuesday 01 December 2026 (0:00:00.1) ****\n" + json.dumps(ok) + "\ntimer: 1 s\n"
    assert parse_rendered(noisy)["pi"].host == "h"  # output of other callbacks around the JSON
    with pytest.raises(HostEnvironmentError, match="pi: its connection variables do not render"):
        parse_rendered(
            json.dumps({"plays": [{"tasks": [{"hosts": {"pi": {"failed": True, "msg": "x"}}}]}]})
        )


def test_suite_outcomes_always_reach_the_results_file(tmp_path: Path):
    """A check recorded, an assertion without a record, a crash without one: all in results.json."""
    suites = tmp_path / "validation"
    suites.mkdir()
    for name in ("conftest.py", "nodeconfig.py"):
        (suites / name).write_text((REPO / "validation" / name).read_text())
    (suites / "test_demo.py").write_text(
        "from conftest import assert_passed\n"
        "from capturelab.results import Result\n\n"
        "SUITE_BUDGET_S = 60\n"
        'SUITE_PROFILE = "lab"\n\n'
        "def test_recorded(record):\n"
        "    r = Result('demo', 'fast-enough', 'n1', 'fail', 1, 2, 'B/s', tool='t')\n"
        "    record(r)\n"
        "    assert_passed([r])\n\n"
        "def test_assertion(record):\n"
        "    assert 1 == 2, 'the numbers differ'\n\n"
        "def test_crash(record):\n"
        "    raise RuntimeError('tool missing')\n\n"
        "def test_fine(record):\n"
        "    record(Result('demo', 'ok', 'n1', 'pass', 1, 1))\n"
    )
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suites),
            "-p",
            "no:cacheprovider",
            "-q",
            "--capturelab-results",
            str(out),
            "--capturelab-evidence",
            str(tmp_path / "ev.json"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout[-2000:]
    got = {(r.check, r.status) for r in read_results(out)}
    assert got == {
        ("fast-enough", "fail"),
        ("test_assertion", "fail"),
        ("test_crash", "error"),
        ("ok", "pass"),
        ("suite-time", "pass"),  # the whole suite's seconds against its SUITE_BUDGET_S
    }
    assert "the numbers differ" in json.dumps([r.to_dict() for r in read_results(out)])
    assert exit_code(read_results(out)) == 2  # a check that could not run wins: environment
