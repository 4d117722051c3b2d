"""Validation suites for a running lab: plain pytest + Testinfra, one ``Result`` per check.

    pytest validation --hosts=ansible://all --ansible-inventory=inventory/sim

(``capturelab validate`` and ``playbooks/validate.yml`` run exactly this and render the report.)

Nodes are reached the way Ansible reaches them: the inventory's connection variables may be
Jinja templates (the sim lab's container names, the VM's forwarded port and key), which only
Ansible renders, so one Ansible run renders them (``capturelab.validate.connect``) and the
suites connect with exactly those settings (``--force-ansible`` is set for Testinfra's own
``host`` fixture for the same reason). Each test records its checks with the ``record`` fixture; a test that fails
without recording one is recorded as a failure (an assertion) or an environment error
(anything else), so nothing is lost from the report.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

from capturelab import authority
from capturelab.errors import InputError
from capturelab.lab.inventory import TIER_GROUPS, dump_inventory, group_members
from capturelab.results import Result, write_results
from capturelab.validate.budget import budget_result, suite_info
from capturelab.validate.connect import Connection, rendered_connections
from capturelab.validate.targets import Targets, targets_from_vars

RESULTS_KEY = pytest.StashKey[list[Result]]()
EVIDENCE_KEY = pytest.StashKey[dict[str, Any]]()
SUITE_SECONDS_KEY = pytest.StashKey[dict[str, float]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("capturelab")
    group.addoption(
        "--capturelab-results",
        default=os.environ.get("CAPTURELAB_RESULTS", ".lab/validation/results.json"),
        help="where the checks' results are written (JSON list of capturelab Result)",
    )
    group.addoption(
        "--capturelab-evidence",
        default=os.environ.get("CAPTURELAB_EVIDENCE", ".lab/validation/evidence.json"),
        help="where the plots' data (timeline, loss curve, findings, targets) is written",
    )


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("ansible-inventory") is None:  # run as .venv/bin/python without activating
        os.environ["PATH"] = (
            f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        )
    config.stash[RESULTS_KEY] = []
    config.stash[EVIDENCE_KEY] = {}
    config.stash[SUITE_SECONDS_KEY] = {}
    hosts = config.getoption("hosts", default=None)
    if hosts and str(hosts).startswith("ansible://"):
        config.option.force_ansible = True  # templated connection vars: only Ansible renders them


@dataclass
class Lab:
    """The inventory as the suites see it: tier groups, variables, and a host per node."""

    inventory: Path
    hostvars: dict[str, dict[str, Any]]
    tiers: dict[str, list[str]]
    selected: set[str]
    targets: Targets
    _hosts: dict[str, Any] = field(default_factory=dict)
    _connections: dict[str, Connection] = field(default_factory=dict)

    def nodes(self, tier: str) -> list[str]:
        return [n for n in self.tiers.get(tier, []) if n in self.selected]

    def groups_of(self, node: str) -> list[str]:
        return [t for t in TIER_GROUPS if node in self.tiers.get(t, [])]

    def var(self, node: str, name: str, default: Any = None) -> Any:
        return self.hostvars.get(node, {}).get(name, default)

    def consent_authority(self, node: str) -> authority.Authority:
        """The controller's consent authority key, as the roles find it for ``node``."""
        folder = str(self.var(node, "consent_authority_dir", authority.CONTROLLER_DIR))
        if "{{" in folder:  # the role's templated default: the same folder
            folder = str(authority.CONTROLLER_DIR)
        return authority.load_authority(Path(folder) / "authority.key")

    def host(self, node: str) -> Any:
        if node not in self._hosts:
            if not self._connections:
                self._connections.update(rendered_connections(self.inventory))
            if node not in self._connections:
                raise InputError(f"{node}: not a host of {self.inventory}")
            spec, kwargs = self._connections[node].spec(self.inventory)
            self._hosts[node] = testinfra.get_host(spec, **kwargs)
        return self._hosts[node]

    def run(self, node: str, command: str, timeout_s: int = 300) -> Any:
        """Run a shell command on ``node``, bounded by ``timeout`` on the node itself."""
        return self.host(node).run(f"timeout {int(timeout_s)} bash -c {shlex.quote(command)}")

    def capturelab(self, node: str) -> str:
        return f"{self.var(node, 'capturelab_venv_path', '/opt/capturelab/venv')}/bin/capturelab"


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Lab:
    inventory = pytestconfig.getoption("ansible_inventory", default=None)
    if not inventory:
        raise pytest.UsageError("--ansible-inventory is required (e.g. inventory/sim)")
    data = dump_inventory(Path(inventory))
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    if not hostvars:
        raise InputError(f"inventory {inventory} has no hosts")
    tiers = {t: sorted(group_members(data, t)) for t in TIER_GROUPS}
    pattern = str(pytestconfig.getoption("hosts") or "ansible://all").removeprefix("ansible://")
    selected = set(AnsibleRunner(inventory).get_hosts(pattern or "all"))
    any_vars = hostvars[sorted(hostvars)[0]]
    targets = targets_from_vars(any_vars, tiers)
    pytestconfig.stash[EVIDENCE_KEY]["targets"] = targets.to_dict()
    return Lab(Path(inventory), hostvars, tiers, selected, targets)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``record(result, ...)`` adds results; the test's own outcome must agree with them."""
    mine: list[Result] = []
    request.node.stash[RESULTS_KEY] = mine

    def add(*results: Result) -> None:
        mine.extend(results)
        request.config.stash[RESULTS_KEY].extend(results)

    yield add


@pytest.fixture(scope="session")
def evidence(pytestconfig: pytest.Config) -> dict[str, Any]:
    return pytestconfig.stash[EVIDENCE_KEY]


def assert_passed(results: list[Result]) -> None:
    """Fail the test if any recorded check failed, naming them."""
    bad = [r for r in results if r.status in ("fail", "error")]
    assert not bad, "; ".join(
        f"{r.check} {r.node}: {r.value} {r.unit or ''} (target {r.target}) {r.detail}" for r in bad
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    times = item.config.stash[SUITE_SECONDS_KEY]  # the suite's wall time: setup, call, teardown
    stem = Path(str(item.path)).stem
    times[stem] = times.get(stem, 0.0) + report.duration
    if report.when in ("setup", "call") and report.failed:
        mine = item.stash.get(RESULTS_KEY, [])
        if not any(r.status in ("fail", "error") for r in mine):
            assertion = call.excinfo is not None and call.excinfo.errisinstance(AssertionError)
            message = str(call.excinfo.value) if call.excinfo else report.longreprtext
            result = Result(
                suite=item.module.__name__.removeprefix("test_") if item.module else "validation",
                check=item.name,
                node="lab",
                status="fail" if assertion else "error",
                detail=" ".join(message.split())[:500],
                tool="pytest",
            )
            item.config.stash[RESULTS_KEY].append(result)
    return report


def suite_time_results(config: pytest.Config) -> list[Result]:
    """One suite-time check per suite that ran, against the budget its file states."""
    out = []
    for stem, seconds in config.stash[SUITE_SECONDS_KEY].items():
        path = Path(__file__).parent / f"{stem}.py"
        info = suite_info(path)
        out.append(budget_result(info.name, seconds, info.budget_s, f"validation/{path.name}"))
    return out


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    config.stash[RESULTS_KEY].extend(suite_time_results(config))
    results_path = Path(config.getoption("capturelab_results"))
    evidence_path = Path(config.getoption("capturelab_evidence"))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    evidence_path.parent.mkdir(parents=True, exist_ok=True)
    write_results(results_path, config.stash[RESULTS_KEY])
    evidence = dict(config.stash[EVIDENCE_KEY])
    evidence["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    evidence_path.write_text(json.dumps(evidence, indent=1, sort_keys=True, default=str) + "\n")
