"""The consent authority: keys, signed records, the controller CLI, rotation, bad key files."""

from __future__ import annotations

import io
import json
import multiprocessing
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from capturelab import authority
from capturelab.cli import main
from capturelab.consent import (
    GRANT_KIND,
    grant_body,
    load_signed_record,
    parse_record,
    sign_record,
    signed_document,
    verify_grant,
)
from capturelab.errors import InputError
from capturelab.schema import pseudonymize

SECRET = b"lab-secret-for-tests-0123456789"
RECORD = {
    "participant_id": "p-0001",
    "scopes": ["keys:timing", "mouse"],
    "lawful_basis": "consent",
    "granted": "2026-01-01T00:00:00Z",
    "expires": "2099-01-01T00:00:00Z",
    "region": "us",
}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[authority.Authority, Path, Path]:
    key, pub = tmp_path / "authority.key", tmp_path / "authority.pub"
    return authority.generate(key, pub), key, pub


def _signed_file(tmp_path: Path, key: authority.Authority, **fields: object) -> Path:
    signed = sign_record(parse_record(RECORD | fields), key, SECRET)
    path = tmp_path / "consent.yml"
    path.write_text(yaml.safe_dump(signed_document(signed), sort_keys=False))
    return path


def test_a_signed_record_verifies_and_its_grant_verifies_for_the_pseudonym(keys, tmp_path):
    key, _, pub = keys
    trust = authority.load_trust(pub)
    signed = load_signed_record(_signed_file(tmp_path, key), trust, SECRET)
    assert signed.record.participant_id == "p-0001"
    assert signed.signature.key == key.key_id
    pseudonym = pseudonymize(SECRET, "p-0001")
    verify_grant(pseudonym, signed.record, signed.grant_signature, trust, "control")
    assert "p-0001" not in str(grant_body(pseudonym, signed.record)), "no participant id"
    other = pseudonymize(SECRET, "someone-else")
    with pytest.raises(InputError, match="control: grant: the signature does not match"):
        verify_grant(other, signed.record, signed.grant_signature, trust, "control")
    with pytest.raises(InputError, match="control: unsigned grant"):
        verify_grant(pseudonym, signed.record, None, trust, "control")


def test_the_private_key_file_is_0600_and_never_overwritten(keys):
    _, key, pub = keys
    assert key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError, match=f"{key} exists: .* never overwritten"):
        authority.generate(key, pub.with_name("other.pub"))
    assert authority.load_authority(key).key_id == keys[0].key_id


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace("mouse", "mousf"), "scopes\\[1\\] 'mousf' is not one of"),
        (lambda t: t.replace("2099-01-01", "2099-01-02"), "consent record: the signature does not"),
        (lambda t: t.replace("p-0001", "p-0002"), "consent record: the signature does not"),
        (lambda t: t.replace("region: us", "region: ut"), "consent record: the signature does not"),
        (lambda t: t.split("signature:")[0], "unsigned: signature and grant_signature missing"),
        (lambda t: re.sub("granted: .*", "granted: 2026-13-45", t), "field granted '2026-13-45'"),
    ],
    ids=["bad-scope", "altered-expiry", "altered-participant", "one-byte", "unsigned", "bad-date"],
)
def test_an_altered_unsigned_or_broken_record_is_refused_naming_file_and_reason(
    keys, tmp_path, edit, needle
):
    key, _, pub = keys
    path = _signed_file(tmp_path, key)
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=needle) as err:
        load_signed_record(path, authority.load_trust(pub), SECRET)
    assert str(path) in str(err.value)


def test_a_record_signed_for_another_lab_secret_or_by_an_unknown_key_is_refused(keys, tmp_path):
    key, _, pub = keys
    path = _signed_file(tmp_path, key)
    with pytest.raises(InputError, match="grant_signature \\(signed for another lab secret"):
        load_signed_record(path, authority.load_trust(pub), b"another-lab-secret-0123456789")
    stranger = authority.generate(tmp_path / "s.key", tmp_path / "s.pub")
    with pytest.raises(InputError, match=f"signed by key {key.key_id}, which .*s.pub does not"):
        load_signed_record(path, authority.load_trust(tmp_path / "s.pub"), SECRET)
    forged = _signed_file(tmp_path, stranger)
    with pytest.raises(InputError, match=f"signed by key {stranger.key_id}"):
        load_signed_record(forged, authority.load_trust(pub), SECRET)


def test_a_signature_over_one_kind_never_verifies_as_another(keys):
    key, _, pub = keys
    body = {"pseudonym": "00" * 32}
    signature = key.sign("consent_record", body)
    with pytest.raises(InputError, match="does not match the consent grant"):
        authority.load_trust(pub).verify(GRANT_KIND, body, signature, "here")


def test_rotation_old_and_new_key_trusted_then_old_retired(keys, tmp_path):
    old, _, old_pub = keys
    old_record = _signed_file(tmp_path, old)
    new = authority.generate(tmp_path / "new.key", tmp_path / "new.pub")
    both = tmp_path / "trust.pub"
    both.write_bytes(old_pub.read_bytes() + (tmp_path / "new.pub").read_bytes())
    assert set(authority.load_trust(both).keys) == {old.key_id, new.key_id}
    load_signed_record(old_record, authority.load_trust(both), SECRET)
    with pytest.raises(InputError, match=f"signed by key {old.key_id}, which .*new.pub does not"):
        load_signed_record(old_record, authority.load_trust(tmp_path / "new.pub"), SECRET)
    assert main(["consent", "sign", str(old_record), "--key", str(tmp_path / "new.key"),
                 "--lab-secret", str(_secret(tmp_path)), "--out", str(old_record)]) == 0  # fmt: skip
    resigned = load_signed_record(old_record, authority.load_trust(tmp_path / "new.pub"), SECRET)
    assert resigned.signature.key == new.key_id


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda p: p.chmod(0o640), "has mode 0640: group and others must have no access"),
        (lambda p: p.unlink(), "cannot read the consent authority key: No such file"),
        (lambda p: p.write_text("not a key"), "not an unencrypted PEM private key"),
    ],
    ids=["loose-mode", "missing", "garbage"],
)
def test_bad_private_key_files_are_named(keys, setup, needle):
    _, key, _ = keys
    setup(key)
    key.chmod(0o600) if key.exists() and "mode" not in needle else None
    with pytest.raises(InputError, match=needle) as err:
        authority.load_authority(key)
    assert str(key) in str(err.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "holds no PEM PUBLIC KEY block"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n", "has no END line"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "public key 1 is not"),
    ],
)
def test_bad_trust_files_are_named(tmp_path, content, needle):
    path = tmp_path / "trust.pub"
    path.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        authority.load_trust(path)


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "lab.secret"
    path.write_bytes(SECRET + b"\n")
    return path


def _cli(tmp_path: Path, *argv: str) -> int:
    return main(["consent", *argv])


def test_cli_keygen_sign_verify_revoke(tmp_path, capsys):
    key, pub, secret = tmp_path / "a.key", tmp_path / "a.pub", _secret(tmp_path)
    plain, signed = tmp_path / "plain.yml", tmp_path / "signed.yml"
    plain.write_text(yaml.safe_dump(RECORD))
    assert _cli(tmp_path, "keygen", "--key", str(key), "--public", str(pub)) == 0
    assert _cli(tmp_path, "sign", str(plain), "--key", str(key), "--lab-secret", str(secret),
                "--out", str(signed)) == 0  # fmt: skip
    verify = ["verify", str(signed), "--trust", str(pub), "--lab-secret", str(secret)]
    assert _cli(tmp_path, *verify, "--at", "2026-06-01T00:00:00Z") == 0
    assert "valid until 2099-01-01" in capsys.readouterr().out
    assert _cli(tmp_path, *verify, "--at", "2100-01-01T00:00:00Z") == 1
    assert "consent expired 2099-01-01" in capsys.readouterr().err
    assert _cli(tmp_path, *verify, "--host-region", "EU") == 1
    assert "--host-region: region EU is excluded (GDPR)" in capsys.readouterr().err
    assert _cli(tmp_path, *verify, "--host-region", "eu", "--lawful-basis-override",
                "public_task") == 0  # fmt: skip
    assert _cli(tmp_path, *verify, "--excluded-regions", "us") == 1
    assert "the record's region: region us is excluded" in capsys.readouterr().err
    assert _cli(tmp_path, "revoke", str(signed), "--key", str(key), "--lab-secret", str(secret),
                "--at", "2026-06-01T00:00:00Z") == 0  # fmt: skip
    assert _cli(tmp_path, *verify, "--at", "2026-07-01T00:00:00Z") == 1
    assert "consent revoked 2026-06-01" in capsys.readouterr().err
    assert _cli(tmp_path, *verify, "--at", "2026-05-01T00:00:00Z") == 0
    signed.write_text(signed.read_text().replace("mouse", "keys:text"))
    assert _cli(tmp_path, *verify) == 2
    assert f"{signed}: consent record: the signature does not match" in capsys.readouterr().err
    assert (
        _cli(tmp_path, "revoke", str(signed), "--key", str(key), "--lab-secret", str(secret)) == 2
    )


def test_cli_sign_output_is_stable_for_idempotent_deploys(tmp_path, capsys):
    key, pub, secret = tmp_path / "a.key", tmp_path / "a.pub", _secret(tmp_path)
    plain = tmp_path / "plain.yml"
    plain.write_text(yaml.safe_dump(RECORD))
    _cli(tmp_path, "keygen", "--key", str(key), "--public", str(pub))
    capsys.readouterr()
    outputs = []
    for _ in range(2):
        assert _cli(tmp_path, "sign", str(plain), "--key", str(key), "--lab-secret",
                    str(secret)) == 0  # fmt: skip
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1], "Ed25519 is deterministic: a re-run deploys no change"


def test_cli_sign_from_stdin_with_the_secret_in_the_environment(tmp_path, capsys, monkeypatch):
    """How the collector role signs: the vault's record on stdin, the lab secret in a variable."""
    key, pub = tmp_path / "a.key", tmp_path / "a.pub"
    _cli(tmp_path, "keygen", "--key", str(key), "--public", str(pub))
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(RECORD)))
    monkeypatch.setenv("LAB_SECRET", SECRET.decode())
    assert _cli(tmp_path, "sign", "-", "--key", str(key), "--lab-secret-env", "LAB_SECRET") == 0
    signed = tmp_path / "signed.yml"
    signed.write_text(capsys.readouterr().out)
    assert load_signed_record(signed, authority.load_trust(pub), SECRET).record.region == "us"
    monkeypatch.setenv("LAB_SECRET", "short")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(RECORD)))
    assert _cli(tmp_path, "sign", "-", "--key", str(key), "--lab-secret-env", "LAB_SECRET") == 2
    assert "--lab-secret-env LAB_SECRET: the variable holds 5 bytes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("[1, 2]"))
    monkeypatch.setenv("LAB_SECRET", SECRET.decode())
    assert _cli(tmp_path, "sign", "-", "--key", str(key), "--lab-secret-env", "LAB_SECRET") == 2
    assert "stdin: expected a consent record" in capsys.readouterr().err


def test_the_roles_default_key_folder_is_the_one_validation_uses():
    defaults = yaml.safe_load(Path("roles/consent_authority/defaults/main.yml").read_text())
    folder = defaults["consent_authority_dir"]
    assert folder == "{{ lookup('ansible.builtin.env', 'HOME') }}/.local/share/capturelab/consent"
    assert Path.home() / ".local/share/capturelab/consent" == authority.CONTROLLER_DIR


def test_a_trust_file_is_re_read_when_it_changes_and_a_broken_edit_keeps_the_old_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    old = authority.generate(tmp_path / "old.key", tmp_path / "trust.pub")
    new = authority.generate(tmp_path / "new.key", tmp_path / "new.pub")
    watched = authority.TrustFile(tmp_path / "trust.pub")
    signature = new.sign("consent_record", {"a": 1})
    with pytest.raises(InputError, match="does not trust"):
        watched.current().verify("consent_record", {"a": 1}, signature, "x")
    (tmp_path / "trust.pub").write_bytes(old.public_pem() + new.public_pem())  # rotation step 1
    watched.current().verify("consent_record", {"a": 1}, signature, "x")
    (tmp_path / "trust.pub").write_text("half an edit")
    with caplog.at_level("ERROR"):
        kept = watched.current()
    assert "still trusting the keys read before" in caplog.text
    kept.verify("consent_record", {"a": 1}, signature, "x")
    (tmp_path / "trust.pub").unlink()
    assert watched.current() is kept  # a vanished file does not empty the trust either
    with pytest.raises(InputError, match="cannot read the consent authority trust file"):
        authority.TrustFile(tmp_path / "trust.pub")  # but at start it is an error


def _ensure_in_a_process(folder: str, start: Any, out: Any) -> None:
    start.wait(30)  # every process asks at the same instant
    key, created = authority.ensure(Path(folder) / "authority.key", Path(folder) / "authority.pub")
    out.put((key.key_id, created))


def test_two_provisioning_runs_racing_for_a_throwaway_key_agree_on_one(tmp_path: Path):
    """The sim lab's tiers provision side by side: each may be the first to ensure the key."""
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_a_process, args=(str(tmp_path), start, out))
             for _ in range(8)]  # fmt: skip
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len({key for key, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert (tmp_path / "authority.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "authority.pub").stat().st_mode & 0o777 == 0o644
    trust = authority.load_trust(tmp_path / "authority.pub")
    assert list(trust.keys) == [results[0][0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authority.key", "authority.pub"]


def test_ensure_refuses_a_trust_file_of_another_key(tmp_path: Path, capsys):
    authority.generate(tmp_path / "a.key", tmp_path / "a.pub")
    authority.generate(tmp_path / "b.key", tmp_path / "b.pub")
    with pytest.raises(InputError, match=r"a\.pub does not hold the public key of .*b\.key"):
        authority.ensure(tmp_path / "b.key", tmp_path / "a.pub")
    args = ["keygen", "--key", str(tmp_path / "a.key"), "--public", str(tmp_path / "a.pub")]
    assert _cli(tmp_path, *args) == 2  # without --exist-ok an existing key is an error
    assert "is never overwritten" in capsys.readouterr().err
    assert _cli(tmp_path, *args, "--exist-ok") == 0
    assert " exists: private " in capsys.readouterr().out


def test_a_record_s_own_exclusions_are_signed_and_never_reach_the_storage_tier(keys, tmp_path):
    key, _, pub = keys
    mine = {"apps": ["^signal$"], "titles": ["Bank of"]}
    path = _signed_file(tmp_path, key, exclude=mine)
    assert yaml.safe_load(path.read_text())["exclude"] == mine
    signed = load_signed_record(path, authority.load_trust(pub), SECRET)
    assert signed.record.exclude.match("signal", "") == "app pattern '^signal$'"
    pseudonym = pseudonymize(SECRET, "p-0001")
    assert "exclude" not in grant_body(pseudonym, signed.record), "the sink never sees them"
    # A participant's exclusion taken away (or changed) on the Pi breaks the signature.
    path.write_text(path.read_text().replace("- Bank of", "- Bank ox"))
    with pytest.raises(InputError, match="consent record: the signature does not match"):
        load_signed_record(path, authority.load_trust(pub), SECRET)
    # A record signed without the field still verifies as before (no empty field is signed).
    plain = yaml.safe_load(_signed_file(tmp_path, key).read_text())
    assert "exclude" not in plain
