# ruff: noqa: E501 - the recap below is verbatim Ansible output
"""Reading Ansible's PLAY RECAP, which decides idempotence in `make lab`."""

from __future__ import annotations

import pytest

from capturelab.errors import CapturelabError
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
