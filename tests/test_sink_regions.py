"""Regions at the storage tier: the sink refuses a grant whose region is excluded (and every frame
of that participant while no grant is kept), and does not start in an excluded region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from consentkit import erasure, granted
from sinkdata import T0, frame, pseudonym
from test_sink_control import TOPIC, FakeControl
from test_sink_control import _service as control_service
from test_sink_service import Msg

from capturelab.consent import ConsentRecord, LawfulBasis, Scope
from capturelab.errors import InputError
from capturelab.sink import grants
from capturelab.sink.audit import audit
from capturelab.sink.config import parse_config
from capturelab.sink.layout import Layout
from capturelab.sink.service import SinkService

START = datetime.fromtimestamp(T0 / 1e9, UTC) - timedelta(hours=1)


def _grant(region: str) -> ConsentRecord:
    return ConsentRecord(
        "x", frozenset({Scope.KEYS_TIMING}), LawfulBasis.CONSENT, START,
        START + timedelta(days=30), region=region,
    )  # fmt: skip


def _service(root: Path, **regions: Any) -> tuple[SinkService, FakeControl]:
    service, _group, control = control_service(root.parent, root, **regions)
    return service, control


def _announce(control: FakeControl, service: SinkService, who: str, region: str, at: int) -> None:
    control.queue = [Msg(TOPIC, 0, at, granted(pseudonym(who), _grant(region)).encode())]
    service.control_step()


def test_a_grant_in_an_excluded_region_is_refused_and_so_are_its_frames(tmp_path: Path):
    root = tmp_path / "store"
    service, control = _service(root)
    _announce(control, service, "p1", "eu", 0)
    _announce(control, service, "p2", "us", 1)
    assert service.status.refused_control_messages == 1
    assert "grant refused: the record's region: region eu is excluded (GDPR)" in (
        service.status.last_refused
    )
    assert grants.load(Layout(root), pseudonym("p1").hex()) == []  # never kept
    assert len(grants.load(Layout(root), pseudonym("p2").hex())) == 1
    service._process([
        Msg("capture.events", 0, 0, frame("c1", 0, 5, who="p1")),
        Msg("capture.events", 0, 1, frame("c2", 0, 7, who="p2")),
    ])  # fmt: skip
    assert audit(root).pseudonyms == {pseudonym("p2").hex(): 7}
    assert service.store.counters.refused == 1
    service.write_status(force=True)
    assert '"refused_participants": 1' in service.config.status_path.read_text()

    again, _control = _service(root)  # the refusal is durable: a restart still refuses
    again._process([Msg("capture.events", 0, 2, frame("c1", 5, 5, who="p1"))])
    assert audit(root).pseudonyms == {pseudonym("p2").hex(): 7}
    assert again.store.counters.refused == 1


def test_a_later_grant_in_an_allowed_region_lifts_the_refusal(tmp_path: Path):
    root = tmp_path / "store"
    service, control = _service(root)
    _announce(control, service, "p1", "eu", 0)
    _announce(control, service, "p1", "us", 1)
    service._process([Msg("capture.events", 0, 0, frame("c1", 0, 5, who="p1"))])
    assert audit(root).pseudonyms == {pseudonym("p1").hex(): 5}
    assert service.refusals == {}


def test_an_erasure_removes_the_refusal_with_the_rest(tmp_path: Path):
    root = tmp_path / "store"
    service, control = _service(root)
    _announce(control, service, "p1", "eu", 0)
    assert list((root / "consent").glob("*.refused"))
    at = START + timedelta(hours=3)
    control.queue = [Msg(TOPIC, 0, 1, erasure(pseudonym("p1"), at).encode())]
    service.control_step()
    assert service.status.erasures == 1  # erasure is never refused for a region
    assert not list((root / "consent").glob("*"))
    assert service.refusals == {}


def test_a_declared_lawful_basis_lets_an_excluded_region_through(tmp_path: Path):
    root = tmp_path / "store"
    service, control = _service(root, lawful_basis_override="legal_obligation")
    _announce(control, service, "p1", "eu", 0)
    assert service.status.refused_control_messages == 0
    service._process([Msg("capture.events", 0, 0, frame("c1", 0, 5, who="p1"))])
    assert audit(root).pseudonyms == {pseudonym("p1").hex(): 5}


def test_the_sink_does_not_start_in_an_excluded_region(tmp_path: Path):
    root = tmp_path / "store"
    with pytest.raises(InputError, match=r"field region 'eu': this host: region eu is excluded"):
        _service(root, region="eu")
    assert not root.exists()  # refused before anything was created
    service, _ = _service(root, region="eu", lawful_basis_override="consent")
    assert service.config.regions.host_refusal() == ""


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"excluded_regions": "eu"}, "field excluded_regions must be a list of region names"),
        ({"excluded_regions": ["eu", ""]}, "field excluded_regions must be a list"),
        ({"region": 3}, "field region must be a string"),
        ({"lawful_basis_override": "because"}, "field lawful_basis_override 'because' is not"),
    ],
)
def test_bad_region_fields_are_named(fields: dict[str, Any], needle: str):
    data = {"root": "/srv", "bootstrap_servers": "b:9092", "consent_authority_file": "/k.pub"}
    with pytest.raises(InputError, match=needle):
        parse_config({**data, **fields}, "sink config /etc/capturelab/sink.yml")


def test_region_fields_are_read_and_lowered():
    data = {"root": "/srv", "bootstrap_servers": "b:9092", "consent_authority_file": "/k.pub",
            "region": " US ", "excluded_regions": ["EU", "ca"]}  # fmt: skip
    config = parse_config(data, "sink config")
    assert (config.region, config.excluded_regions) == ("us", ("eu", "ca"))
    assert config.regions.refusal("CA").startswith("the record's region: region CA is excluded")
