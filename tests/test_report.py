"""The first report: one line per node from Ansible's own facts, Markdown and JSON, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capturelab.errors import InputError
from capturelab.report.nodes import node_results, parse_setup_output
from capturelab.report.render import write_report
from capturelab.results import Result, exit_code, read_results

SETUP_JSON = {
    "plays": [
        {
            "tasks": [
                {
                    "hosts": {
                        "collector-01": {
                            "ansible_facts": {
                                "ansible_architecture": "aarch64",
                                "ansible_distribution": "Debian",
                                "ansible_distribution_version": "12.12",
                                "ansible_kernel": "6.18.44",
                                "ansible_virtualization_type": "docker",
                            }
                        },
                        "storage-01": {
                            "unreachable": True,
                            "msg": "Failed to connect to the host via ssh: Connection refused\nmore",
                        },
                    }
                }
            ]
        }
    ]
}
GROUPS = {"collector-01": ["collectors"], "storage-01": ["storage"], "gpu-01": ["processing"]}


def test_parse_setup_output():
    nodes = {n.name: n for n in parse_setup_output(json.dumps(SETUP_JSON), GROUPS)}
    assert nodes["collector-01"].reachable
    assert nodes["collector-01"].arch == "aarch64"
    assert nodes["collector-01"].os == "Debian 12.12"
    assert not nodes["storage-01"].reachable
    assert nodes["storage-01"].error == "Failed to connect to the host via ssh: Connection refused"
    assert not nodes["gpu-01"].reachable, "a host with no result is not reachable"


def test_report_folder(tmp_path: Path):
    nodes = parse_setup_output(json.dumps(SETUP_JSON), GROUPS)
    results = node_results(nodes)
    folder = write_report(tmp_path, results, nodes, stamp="20261122T120000")
    assert (tmp_path / "latest").resolve() == folder.resolve()
    md = (folder / "report.md").read_text()
    assert "| collector-01 | collectors | yes | aarch64 | Debian 12.12 | 6.18.44 | docker |" in md
    assert "FAIL" in md
    assert [r.node for r in read_results(folder / "results.json")] == [
        "collector-01",
        "gpu-01",
        "storage-01",
    ]
    assert json.loads((folder / "nodes.json").read_text())[0]["name"] == "collector-01"
    assert exit_code(results) == 1
    # A second report moves 'latest' without touching the first.
    second = write_report(tmp_path, results[:1], nodes[:1], stamp="20261122T130000")
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert (folder / "report.md").exists()


def test_exit_codes():
    ok = Result("lab", "x", "n", "pass")
    bad = Result("lab", "x", "n", "fail")
    env = Result("lab", "x", "n", "error", detail="no engine")
    skip = Result("lab", "x", "n", "skip", detail="no GPU in the sim lab")
    assert exit_code([ok, skip]) == 0
    assert exit_code([ok, bad]) == 1
    assert exit_code([bad, env]) == 2


def test_skip_must_say_why():
    with pytest.raises(InputError, match="a skip must say why"):
        Result("lab", "x", "n", "skip")


def test_results_file_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"suite": "lab", "check": "x", "node": "n"}]))
    with pytest.raises(InputError, match=r"results.json\[0\]: field 'status' is missing"):
        read_results(path)
    path.write_text(json.dumps([{"suite": "lab", "check": "x", "node": "n", "status": "ok"}]))
    with pytest.raises(InputError, match="status 'ok'"):
        read_results(path)
