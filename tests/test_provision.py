# ruff: noqa: E501 - the recap below is verbatim Ansible output
"""Reading Ansible's PLAY RECAP, which decides idempotence in `make lab`."""

from __future__ import annotations

from pathlib import Path

import pytest

from capturelab.errors import CapturelabError
from capturelab.lab import provision
from capturelab.lab.provision import check_idempotent, parse_recap

# Verbatim ansible output (long lines).
RECAP = """
PLAY [Baseline on every node] ****

TASK [common : Set the hostname] ****
ok: [collector-01]

PLAY RECAP *********************************************************************
\x1b[0;32mcollector-01\x1b[0m               : ok=27   changed=0    unreachable=0    failed=0    skipped=10   rescued=0    ignored=0
storage-01                 : ok=30   changed=2    unreachable=0    failed=0    skipped=5    rescued=0    ignored=0
gateway-01                 : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""


def test_parse_recap_reads_every_host_even_coloured():
    recap = parse_recap(RECAP)
    assert set(recap) == {"collector-01", "storage-01", "gateway-01"}
    assert recap["storage-01"].changed == 2
    assert recap["gateway-01"].unreachable == 1
    assert recap["collector-01"].ok == 27


def test_only_the_last_recap_counts():
    assert parse_recap(RECAP + RECAP.replace("changed=2", "changed=0"))["storage-01"].changed == 0


def test_no_recap():
    assert parse_recap("ERROR! the playbook could not be found") == {}


def test_idempotence_names_the_changed_hosts():
    with pytest.raises(CapturelabError, match="storage-01 changed=2"):
        check_idempotent(parse_recap(RECAP))
    check_idempotent(parse_recap(RECAP.replace("changed=2", "changed=0")))


# A stand-in ansible-playbook: announces itself, waits (bounded) until every tier's run has
# started, then prints a recap for the hosts of its --limit; CHANGED sets their changed count.
FAKE_PLAYBOOK = """#!/bin/sh
limit="$5"
touch "$STARTED/$limit"
n=0
while [ "$(ls "$STARTED" | wc -l)" -lt "$TIERS" ]; do
  n=$((n+1)); [ "$n" -gt 100 ] && { echo "alone: $limit"; exit 9; }; sleep 0.1
done
[ "$limit" = "$FAIL" ] && { echo "TASK [boom] fatal"; exit 2; }
echo "PLAY RECAP *****"
for h in $(echo "$HOSTS_OF" | tr ' ' '\\n' | grep "^$limit=" | cut -d= -f2 | tr ',' ' '); do
  echo "$h : ok=3 changed=${CHANGED:-1} unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"
done
"""


def _fake_playbook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiers: dict[str, list[str]],
                   fail: str = "") -> Path:  # fmt: skip
    fake = tmp_path / "ansible-playbook"
    fake.write_text(FAKE_PLAYBOOK)
    fake.chmod(0o755)
    started = tmp_path / "started"
    started.mkdir()
    monkeypatch.setattr(provision, "venv_tool", lambda name: str(fake))
    monkeypatch.setenv("STARTED", str(started))
    monkeypatch.setenv("TIERS", str(sum(1 for m in tiers.values() if m)))
    monkeypatch.setenv("FAIL", fail)
    monkeypatch.setenv("HOSTS_OF", " ".join(f"{t}={','.join(m)}" for t, m in tiers.items() if m))
    playbook = tmp_path / "provision.yml"
    playbook.write_text("---\n")
    return playbook


TIERS = {"collectors": ["c1", "c2"], "gateways": ["gw"], "storage": ["st"], "processing": []}


def test_tiers_run_side_by_side_and_their_recaps_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    playbook = _fake_playbook(tmp_path, monkeypatch, TIERS)
    recap = provision.run_tiers_side_by_side(tmp_path / "inv", playbook, TIERS, tmp_path / "logs")
    assert sorted(recap) == ["c1", "c2", "gw", "st"]  # each run waited for the others: overlap
    assert all(r.changed == 1 for r in recap.values())
    out = capsys.readouterr().out
    assert "== provision collectors (c1, c2)" in out and "c1 : ok=3" in out
    with pytest.raises(CapturelabError, match="not idempotent"):
        check_idempotent(recap)


def test_a_failed_tier_is_named_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    playbook = _fake_playbook(tmp_path, monkeypatch, TIERS, fail="storage")
    with pytest.raises(CapturelabError) as err:
        provision.run_tiers_side_by_side(tmp_path / "inv", playbook, TIERS, tmp_path / "logs")
    assert "--limit storage failed (exit 2)" in str(err.value)
    assert str(tmp_path / "logs" / "storage.log") in str(err.value)


def test_a_host_in_two_tiers_is_refused(tmp_path: Path):
    both = {"gateways": ["n1"], "storage": ["n1"]}
    assert not provision.disjoint_tiers(both)
    with pytest.raises(CapturelabError, match="a host is in two tier groups"):
        provision.run_tiers_side_by_side(tmp_path, tmp_path / "p.yml", both, tmp_path / "logs")
